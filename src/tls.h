/*
 * tls: HTTPS/WSS on a net connection with OpenSSL, as a filter between net and http: net hands
 * it the bytes it reads and the bytes the layers above write, and it passes on plaintext and
 * records. Nothing above net knows a connection is encrypted. OpenSSL never touches a socket:
 * its BIO reads from the buffer of the current read and writes into a buffer that is flushed to
 * the socket after every OpenSSL call.
 */
#ifndef PS_TLS_H
#define PS_TLS_H

#include "net.h"

typedef struct ps__tls ps__tls;

/* Counters of one server's TLS side. */
typedef struct ps__tls_stats {
    uint64_t handshakes; /* completed */
    uint64_t failures;   /* handshakes that failed: bad input, plain HTTP, timeouts */
    uint64_t reloads;    /* certificate reloads that succeeded */
} ps__tls_stats;

/*
 * A server's TLS context from PEM files (a certificate chain and its private key): TLS 1.2 and
 * 1.3 only, forward-secret AEAD ciphers, ALPN http/1.1, no renegotiation, stateless session
 * tickets. Returns NULL (and a reason in err) when a file cannot be read or the key does not
 * match the certificate.
 */
ps__tls *ps__tls_new(uv_loop_t *loop, const char *cert_file, const char *key_file,
                     uint32_t handshake_timeout_ms, char *err, size_t errlen);
/* The loop whose timers bound handshakes (set once the server has its loop). */
void ps__tls_set_loop(ps__tls *t, uv_loop_t *loop);
/* Drops the server's reference; connections keep the context they started with until they
 * close. */
void ps__tls_free(ps__tls *t);
/*
 * Reads the files again (same names). New connections get the new certificate; open ones keep
 * theirs. Returns 0, or -1 with the reason in err, and the old certificate stays in use.
 */
int ps__tls_reload(ps__tls *t, char *err, size_t errlen);
const ps__tls_stats *ps__tls_get_stats(const ps__tls *t);

/* Puts a freshly accepted connection behind TLS: call before its owner is attached. */
void ps__tls_attach(ps__tls *t, ps__conn *c);
/* Whether c speaks TLS, and whether its handshake has completed. */
bool ps__tls_conn_secure(const ps__conn *c);

#endif
