/*
 * hist: an HDR-style latency histogram in microseconds. Values below 2^LG_HIST_BITS us are
 * counted exactly; above, every power of two is split into 2^(LG_HIST_BITS-1) linear
 * sub-buckets, so a recorded value is known to within 1/128 (0.8 %) at any magnitude. Recording
 * is a shift and an increment; the whole table is a few thousand counters and is never resized.
 */
#ifndef LG_HIST_H
#define LG_HIST_H

#include <stdint.h>

#define LG_HIST_BITS 8       /* 256 exact values, then 128/octave */
#define LG_HIST_MAX_SHIFT 34 /* up to 2^42 us: far past any run */
#define LG_HIST_BUCKETS ((LG_HIST_MAX_SHIFT + 2) << (LG_HIST_BITS - 1))

typedef struct lg_hist {
    uint64_t count;                    /* values recorded */
    uint64_t sum;                      /* their sum, for the mean */
    uint64_t min;                      /* smallest value, UINT64_MAX when empty */
    uint64_t max;                      /* largest value */
    uint64_t buckets[LG_HIST_BUCKETS]; /* counts per log-linear bucket */
} lg_hist;

void lg_hist_init(lg_hist *h);
void lg_hist_record(lg_hist *h, uint64_t us);
/* The highest value equivalent to the q-quantile (0 < q <= 1), as HdrHistogram reports it. */
uint64_t lg_hist_quantile(const lg_hist *h, double q);
double lg_hist_mean(const lg_hist *h);

#endif
