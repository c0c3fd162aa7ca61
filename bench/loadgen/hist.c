/*
 * hist: log-linear bucketing (see hist.h). With B = LG_HIST_BITS, a value v with m significant
 * bits (m <= B) sits in bucket v; otherwise shift = m - B and the bucket is
 * shift * 2^(B-1) + (v >> shift), where v >> shift lies in [2^(B-1), 2^B). The index is
 * therefore continuous and monotonic in v, and each bucket covers [mant << shift,
 * (mant + 1) << shift).
 */
#include "hist.h"

#include <string.h>

#define HALF (1u << (LG_HIST_BITS - 1))

static unsigned bucket_of(uint64_t v)
{
    unsigned m = v ? 64u - (unsigned)__builtin_clzll(v) : 0;
    if (m <= LG_HIST_BITS)
        return (unsigned)v;
    unsigned shift = m - LG_HIST_BITS;
    if (shift > LG_HIST_MAX_SHIFT)
        return LG_HIST_BUCKETS - 1;
    return shift * HALF + (unsigned)(v >> shift);
}

/* The largest value that lands in bucket i. */
static uint64_t bucket_high(unsigned i)
{
    if (i < 2 * HALF)
        return i;
    unsigned shift = i / HALF - 1;
    uint64_t mant = i - shift * HALF;
    return ((mant + 1) << shift) - 1;
}

void lg_hist_init(lg_hist *h)
{
    memset(h, 0, sizeof *h);
    h->min = UINT64_MAX;
}

void lg_hist_record(lg_hist *h, uint64_t us)
{
    h->buckets[bucket_of(us)]++;
    h->count++;
    h->sum += us;
    if (us < h->min)
        h->min = us;
    if (us > h->max)
        h->max = us;
}

uint64_t lg_hist_quantile(const lg_hist *h, double q)
{
    if (h->count == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->count + 0.5);
    if (rank < 1)
        rank = 1;
    if (rank > h->count)
        rank = h->count;
    uint64_t seen = 0;
    for (unsigned i = 0; i < LG_HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= rank) {
            uint64_t v = bucket_high(i);
            return v < h->max ? v : h->max;
        }
    }
    return h->max;
}

double lg_hist_mean(const lg_hist *h)
{
    return h->count ? (double)h->sum / (double)h->count : 0.0;
}
