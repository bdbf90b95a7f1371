/*
 * COpenSSL: the distribution's libssl/libcrypto, plus static inline wrappers for the
 * parts of the OpenSSL API that are macros (and so invisible to Swift).
 * Nothing here holds logic: each wrapper forwards to exactly one OpenSSL call.
 */
#ifndef BEEMESH_COPENSSL_SHIM_H
#define BEEMESH_COPENSSL_SHIM_H

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

static inline long beemesh_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version) {
    return SSL_CTX_set_min_proto_version(ctx, version);
}
static inline long beemesh_SSL_CTX_set_max_proto_version(SSL_CTX *ctx, int version) {
    return SSL_CTX_set_max_proto_version(ctx, version);
}
static inline uint64_t beemesh_SSL_CTX_set_options(SSL_CTX *ctx, uint64_t options) {
    return SSL_CTX_set_options(ctx, options);
}
static inline long beemesh_SSL_CTX_set_mode(SSL_CTX *ctx, long mode) {
    return SSL_CTX_set_mode(ctx, mode);
}
static inline long beemesh_SSL_CTX_set_session_cache_mode(SSL_CTX *ctx, long mode) {
    return SSL_CTX_set_session_cache_mode(ctx, mode);
}
static inline int beemesh_SSL_CTX_set1_groups_list(SSL_CTX *ctx, const char *list) {
    return (int)SSL_CTX_set1_groups_list(ctx, list);
}
static inline int beemesh_SSL_CTX_add1_chain_cert(SSL_CTX *ctx, X509 *x509) {
    return (int)SSL_CTX_add1_chain_cert(ctx, x509);
}

static inline int beemesh_sk_GENERAL_NAME_num(const GENERAL_NAMES *names) {
    return sk_GENERAL_NAME_num(names);
}
static inline GENERAL_NAME *beemesh_sk_GENERAL_NAME_value(const GENERAL_NAMES *names, int i) {
    return sk_GENERAL_NAME_value(names, i);
}
static inline void beemesh_GENERAL_NAMES_free(GENERAL_NAMES *names) {
    GENERAL_NAMES_free(names);
}
static inline int beemesh_sk_X509_num(const STACK_OF(X509) *stack) {
    return sk_X509_num(stack);
}
static inline X509 *beemesh_sk_X509_value(const STACK_OF(X509) *stack, int i) {
    return sk_X509_value(stack, i);
}
static inline STACK_OF(X509) *beemesh_sk_X509_new_null(void) {
    return sk_X509_new_null();
}
static inline int beemesh_sk_X509_push(STACK_OF(X509) *stack, X509 *x509) {
    return sk_X509_push(stack, x509);
}
static inline void beemesh_sk_X509_free(STACK_OF(X509) *stack) {
    sk_X509_free(stack);
}
static inline int beemesh_X509_STORE_CTX_ssl_index(void) {
    return SSL_get_ex_data_X509_STORE_CTX_idx();
}
static inline int beemesh_SSL_get_ex_new_index(void) {
    return SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static inline void beemesh_BIO_set_retry_read(BIO *bio) {
    BIO_set_retry_read(bio);
}
static inline void beemesh_BIO_clear_retry_flags(BIO *bio) {
    BIO_clear_retry_flags(bio);
}
static inline void beemesh_BIO_set_retry_write(BIO *bio) {
    BIO_set_retry_write(bio);
}
static inline uint64_t beemesh_SSL_OP_NO_TICKET(void) {
    return SSL_OP_NO_TICKET;
}
static inline uint64_t beemesh_SSL_OP_NO_RENEGOTIATION(void) {
    return SSL_OP_NO_RENEGOTIATION;
}
static inline unsigned long beemesh_XN_FLAG_RFC2253(void) {
    return XN_FLAG_RFC2253;
}

#endif
