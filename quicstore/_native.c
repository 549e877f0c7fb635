/*
 * quicstore._native: QUIC packet protection in C (RFC 9001 sections 5.3 and 5.4).
 *
 * The first piece of quicstore's native data plane. aioquic 1.7.2 protects every packet with
 * three calls into the `cryptography` package and header masking in Python; this module does
 * a packet's AEAD and header protection in one call on OpenSSL contexts whose keys are set
 * once, per key, not per packet. quicstore/transport/native.py plugs it into aioquic's
 * CryptoContext; aioquic keeps the handshake, the key schedule and every decision.
 *
 * Every length read from a packet is checked against the buffer before use. Buffers handed
 * in are only read (seal_into writes only inside the writable buffer it is given, within the
 * bounds it checks). Built with -Wall -Wextra -Werror; tools/native_asan.py builds it with
 * AddressSanitizer and runs its tests and a fuzz pass.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <string.h>

#define NONCE_LENGTH 12
#define TAG_LENGTH 16
#define SAMPLE_LENGTH 16
#define PACKET_NUMBER_LENGTH_MAX 4
#define MAX_KEY_LENGTH 32

static PyObject *ProtectionError; /* authentication or format failure: aioquic's CryptoError */

/* ------------------------------------------------------------------ AEAD */

typedef struct {
    PyObject_HEAD
    EVP_CIPHER_CTX *seal_ctx;
    EVP_CIPHER_CTX *open_ctx;
    unsigned char iv[NONCE_LENGTH];
} AeadObject;

static void aead_dealloc(AeadObject *self) {
    EVP_CIPHER_CTX_free(self->seal_ctx);
    EVP_CIPHER_CTX_free(self->open_ctx);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static const EVP_CIPHER *aead_cipher(const char *name, Py_ssize_t *key_length) {
    if (strcmp(name, "aes-128-gcm") == 0) {
        *key_length = 16;
        return EVP_aes_128_gcm();
    }
    if (strcmp(name, "aes-256-gcm") == 0) {
        *key_length = 32;
        return EVP_aes_256_gcm();
    }
    if (strcmp(name, "chacha20-poly1305") == 0) {
        *key_length = 32;
        return EVP_chacha20_poly1305();
    }
    return NULL;
}

static int aead_init(AeadObject *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"cipher_name", "key", "iv", NULL};
    const char *name;
    Py_buffer key, iv;
    Py_ssize_t key_length = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "yy*y*", keywords, &name, &key, &iv))
        return -1;
    int result = -1;
    const EVP_CIPHER *cipher = aead_cipher(name, &key_length);
    if (cipher == NULL) {
        PyErr_Format(ProtectionError, "Invalid cipher name: %s", name);
        goto done;
    }
    if (key.len != key_length || iv.len != NONCE_LENGTH) {
        PyErr_SetString(ProtectionError, "Invalid key or iv length");
        goto done;
    }
    EVP_CIPHER_CTX_free(self->seal_ctx);
    EVP_CIPHER_CTX_free(self->open_ctx);
    self->seal_ctx = EVP_CIPHER_CTX_new();
    self->open_ctx = EVP_CIPHER_CTX_new();
    if (self->seal_ctx == NULL || self->open_ctx == NULL ||
        !EVP_EncryptInit_ex(self->seal_ctx, cipher, NULL, key.buf, NULL) ||
        !EVP_DecryptInit_ex(self->open_ctx, cipher, NULL, key.buf, NULL)) {
        PyErr_SetString(PyExc_MemoryError, "OpenSSL could not set up the AEAD");
        goto done;
    }
    memcpy(self->iv, iv.buf, NONCE_LENGTH);
    result = 0;
done:
    PyBuffer_Release(&key);
    PyBuffer_Release(&iv);
    return result;
}

static void make_nonce(const AeadObject *self, uint64_t packet_number, unsigned char *nonce) {
    memcpy(nonce, self->iv, NONCE_LENGTH);
    for (int i = 0; i < 8; i++)
        nonce[NONCE_LENGTH - 1 - i] ^= (unsigned char)(packet_number >> (8 * i));
}

/* Seal a payload given in parts: `parts` pieces, the i-th `lengths[i]` bytes at `ins[i]`,
 * encrypted to consecutive bytes from `out` (a piece may be `out`'s own bytes, in place),
 * then the tag. The stream data of a packet is encrypted straight from the buffer it was
 * written in, not copied into the packet first. */
static int aead_seal_parts(AeadObject *self, const unsigned char *aad, Py_ssize_t aad_length,
                           const unsigned char *const *ins, const Py_ssize_t *lengths,
                           int parts, unsigned char *out, uint64_t packet_number) {
    unsigned char nonce[NONCE_LENGTH];
    int written = 0, final = 0;
    Py_ssize_t total = 0;
    make_nonce(self, packet_number, nonce);
    if (aad_length > INT_MAX || !EVP_EncryptInit_ex(self->seal_ctx, NULL, NULL, NULL, nonce) ||
        !EVP_EncryptUpdate(self->seal_ctx, NULL, &written, aad, (int)aad_length))
        goto failed;
    for (int i = 0; i < parts; i++) {
        if (lengths[i] == 0)
            continue;
        /* GCM and ChaCha20-Poly1305 are stream modes: all bytes come out of each update. */
        if (lengths[i] > INT_MAX ||
            !EVP_EncryptUpdate(self->seal_ctx, out + total, &written, ins[i], (int)lengths[i]) ||
            written != lengths[i])
            goto failed;
        total += lengths[i];
    }
    if (!EVP_EncryptFinal_ex(self->seal_ctx, out + total, &final) || final != 0 ||
        !EVP_CIPHER_CTX_ctrl(self->seal_ctx, EVP_CTRL_AEAD_GET_TAG, TAG_LENGTH, out + total))
        goto failed;
    return 0;
failed:
    PyErr_SetString(ProtectionError, "AEAD encryption failed");
    return -1;
}

/* Encrypt `length` bytes at `in` into `out` (may equal `in`), tag after the ciphertext. */
static int aead_seal(AeadObject *self, const unsigned char *aad, Py_ssize_t aad_length,
                     const unsigned char *in, Py_ssize_t length, unsigned char *out,
                     uint64_t packet_number) {
    return aead_seal_parts(self, aad, aad_length, &in, &length, 1, out, packet_number);
}

/* Decrypt `length` bytes (ciphertext then tag) into `out`; 1 if authentic, 0 if not. */
static int aead_open(AeadObject *self, const unsigned char *aad, Py_ssize_t aad_length,
                     const unsigned char *in, Py_ssize_t length, unsigned char *out,
                     uint64_t packet_number) {
    unsigned char nonce[NONCE_LENGTH];
    unsigned char tag[TAG_LENGTH];
    int written = 0, final = 0;
    if (length < TAG_LENGTH || length > INT_MAX || aad_length > INT_MAX)
        return 0;
    Py_ssize_t body = length - TAG_LENGTH;
    memcpy(tag, in + body, TAG_LENGTH);
    make_nonce(self, packet_number, nonce);
    if (!EVP_DecryptInit_ex(self->open_ctx, NULL, NULL, NULL, nonce) ||
        !EVP_DecryptUpdate(self->open_ctx, NULL, &written, aad, (int)aad_length) ||
        !EVP_DecryptUpdate(self->open_ctx, out, &written, in, (int)body) ||
        !EVP_CIPHER_CTX_ctrl(self->open_ctx, EVP_CTRL_AEAD_SET_TAG, TAG_LENGTH, tag))
        return 0;
    return EVP_DecryptFinal_ex(self->open_ctx, out + written, &final) > 0;
}

static PyObject *aead_encrypt(AeadObject *self, PyObject *args) {
    Py_buffer data, aad;
    unsigned long long packet_number;
    if (!PyArg_ParseTuple(args, "y*y*K", &data, &aad, &packet_number))
        return NULL;
    PyObject *result = PyBytes_FromStringAndSize(NULL, data.len + TAG_LENGTH);
    if (result != NULL &&
        aead_seal(self, aad.buf, aad.len, data.buf, data.len,
                  (unsigned char *)PyBytes_AS_STRING(result), packet_number) < 0)
        Py_CLEAR(result);
    PyBuffer_Release(&data);
    PyBuffer_Release(&aad);
    return result;
}

static PyObject *aead_decrypt(AeadObject *self, PyObject *args) {
    Py_buffer data, aad;
    unsigned long long packet_number;
    if (!PyArg_ParseTuple(args, "y*y*K", &data, &aad, &packet_number))
        return NULL;
    PyObject *result = NULL;
    if (data.len < TAG_LENGTH) {
        PyErr_SetString(ProtectionError, "Payload is shorter than the AEAD tag");
    } else {
        result = PyBytes_FromStringAndSize(NULL, data.len - TAG_LENGTH);
        if (result != NULL &&
            !aead_open(self, aad.buf, aad.len, data.buf, data.len,
                       (unsigned char *)PyBytes_AS_STRING(result), packet_number)) {
            Py_CLEAR(result);
            PyErr_SetString(ProtectionError, "Payload decryption failed");
        }
    }
    PyBuffer_Release(&data);
    PyBuffer_Release(&aad);
    return result;
}

static PyMethodDef aead_methods[] = {
    {"encrypt", (PyCFunction)aead_encrypt, METH_VARARGS,
     "encrypt(data, associated_data, packet_number) -> ciphertext + 16-byte tag"},
    {"decrypt", (PyCFunction)aead_decrypt, METH_VARARGS,
     "decrypt(data, associated_data, packet_number) -> plaintext; ProtectionError if forged"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject AeadType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "quicstore._native.AEAD",
    .tp_doc = "AEAD(cipher_name, key, iv): QUIC payload protection with one key (RFC 9001 "
              "5.3); cipher_name is b'aes-128-gcm', b'aes-256-gcm' or b'chacha20-poly1305'.",
    .tp_basicsize = sizeof(AeadObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)aead_init,
    .tp_dealloc = (destructor)aead_dealloc,
    .tp_methods = aead_methods,
};

/* ------------------------------------------------------------------ header protection */

typedef struct {
    PyObject_HEAD
    EVP_CIPHER_CTX *ctx;
    int is_chacha20;
} HeaderProtectionObject;

static void hp_dealloc(HeaderProtectionObject *self) {
    EVP_CIPHER_CTX_free(self->ctx);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int hp_init(HeaderProtectionObject *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"cipher_name", "key", NULL};
    const char *name;
    Py_buffer key;
    const EVP_CIPHER *cipher = NULL;
    Py_ssize_t key_length = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "yy*", keywords, &name, &key))
        return -1;
    int result = -1;
    self->is_chacha20 = 0;
    if (strcmp(name, "aes-128-ecb") == 0) {
        cipher = EVP_aes_128_ecb();
        key_length = 16;
    } else if (strcmp(name, "aes-256-ecb") == 0) {
        cipher = EVP_aes_256_ecb();
        key_length = 32;
    } else if (strcmp(name, "chacha20") == 0) {
        cipher = EVP_chacha20();
        key_length = 32;
        self->is_chacha20 = 1;
    } else {
        PyErr_Format(ProtectionError, "Invalid cipher name: %s", name);
        goto done;
    }
    if (key.len != key_length) {
        PyErr_SetString(ProtectionError, "Invalid key length");
        goto done;
    }
    EVP_CIPHER_CTX_free(self->ctx);
    self->ctx = EVP_CIPHER_CTX_new();
    if (self->ctx == NULL || !EVP_EncryptInit_ex(self->ctx, cipher, NULL, key.buf, NULL) ||
        !EVP_CIPHER_CTX_set_padding(self->ctx, 0)) {
        PyErr_SetString(PyExc_MemoryError, "OpenSSL could not set up header protection");
        goto done;
    }
    result = 0;
done:
    PyBuffer_Release(&key);
    return result;
}

/* The 5-byte mask for a 16-byte sample (RFC 9001 5.4.3 and 5.4.4). */
static int hp_mask(HeaderProtectionObject *self, const unsigned char *sample,
                   unsigned char *mask) {
    unsigned char out[SAMPLE_LENGTH];
    static const unsigned char zeros[5] = {0};
    int written = 0;
    if (self->is_chacha20) {
        /* The sample is the counter (little-endian) and the nonce: OpenSSL's 16-byte IV. */
        if (!EVP_EncryptInit_ex(self->ctx, NULL, NULL, NULL, sample) ||
            !EVP_EncryptUpdate(self->ctx, out, &written, zeros, 5))
            goto fail;
    } else if (!EVP_EncryptUpdate(self->ctx, out, &written, sample, SAMPLE_LENGTH)) {
        goto fail;
    }
    memcpy(mask, out, 5);
    return 0;
fail:
    PyErr_SetString(ProtectionError, "Header protection failed");
    return -1;
}

/* Mask (or unmask) the first byte and packet number of `packet` in place. */
static void hp_xor(unsigned char *packet, Py_ssize_t pn_offset, int pn_length,
                   const unsigned char *mask) {
    packet[0] ^= mask[0] & ((packet[0] & 0x80) ? 0x0F : 0x1F);
    for (int i = 0; i < pn_length; i++)
        packet[pn_offset + i] ^= mask[1 + i];
}

static PyObject *hp_mask_method(HeaderProtectionObject *self, PyObject *args) {
    Py_buffer sample;
    unsigned char mask[5];
    if (!PyArg_ParseTuple(args, "y*", &sample))
        return NULL;
    PyObject *result = NULL;
    if (sample.len != SAMPLE_LENGTH)
        PyErr_SetString(ProtectionError, "The sample must be 16 bytes");
    else if (hp_mask(self, sample.buf, mask) == 0)
        result = PyBytes_FromStringAndSize((const char *)mask, 5);
    PyBuffer_Release(&sample);
    return result;
}

/* apply(plain_header, protected_payload) -> the packet with its header protected */
static PyObject *hp_apply(HeaderProtectionObject *self, PyObject *args) {
    Py_buffer header, payload;
    if (!PyArg_ParseTuple(args, "y*y*", &header, &payload))
        return NULL;
    PyObject *result = NULL;
    int pn_length = header.len ? (((const unsigned char *)header.buf)[0] & 0x03) + 1 : 0;
    Py_ssize_t pn_offset = header.len - pn_length;
    if (header.len < 1 || pn_offset < 1 ||
        payload.len < PACKET_NUMBER_LENGTH_MAX - pn_length + SAMPLE_LENGTH) {
        PyErr_SetString(ProtectionError, "Packet is too short to sample");
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, header.len + payload.len);
    if (result == NULL)
        goto done;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    unsigned char mask[5];
    memcpy(out, header.buf, header.len);
    memcpy(out + header.len, payload.buf, payload.len);
    if (hp_mask(self, out + pn_offset + PACKET_NUMBER_LENGTH_MAX, mask) < 0) {
        Py_CLEAR(result);
        goto done;
    }
    hp_xor(out, pn_offset, pn_length, mask);
done:
    PyBuffer_Release(&header);
    PyBuffer_Release(&payload);
    return result;
}

/* The header protection mask of a received packet whose packet number starts at
 * `pn_offset`, its unmasked first byte and its packet number length; -1 (ProtectionError
 * set) if the packet is too short to sample. */
static int header_mask(HeaderProtectionObject *hp, const unsigned char *in, Py_ssize_t size,
                       Py_ssize_t pn_offset, unsigned char *mask, unsigned char *first,
                       int *pn_length) {
    if (pn_offset < 1 || pn_offset > size ||
        size - pn_offset < PACKET_NUMBER_LENGTH_MAX + SAMPLE_LENGTH) {
        PyErr_SetString(ProtectionError, "Packet is too short to sample");
        return -1;
    }
    if (hp_mask(hp, in + pn_offset + PACKET_NUMBER_LENGTH_MAX, mask) < 0)
        return -1;
    *first = in[0] ^ (mask[0] & ((in[0] & 0x80) ? 0x0F : 0x1F));
    *pn_length = (*first & 0x03) + 1;
    return 0;
}

/* Copy the header through the packet number into `plain`, unmasked; the truncated packet
 * number. */
static uint64_t unmask_header(const unsigned char *in, Py_ssize_t pn_offset, int pn_length,
                              unsigned char first, const unsigned char *mask,
                              unsigned char *plain) {
    uint64_t truncated = 0;
    memcpy(plain, in, pn_offset + pn_length);
    plain[0] = first;
    for (int i = 0; i < pn_length; i++) {
        plain[pn_offset + i] ^= mask[1 + i];
        truncated = (truncated << 8) | plain[pn_offset + i];
    }
    return truncated;
}

/* remove(packet, pn_offset) -> (the unprotected header through the packet number, the
 * truncated packet number) */
static PyObject *hp_remove(HeaderProtectionObject *self, PyObject *args) {
    Py_buffer packet;
    Py_ssize_t pn_offset;
    if (!PyArg_ParseTuple(args, "y*n", &packet, &pn_offset))
        return NULL;
    PyObject *result = NULL, *header = NULL;
    const unsigned char *in = packet.buf;
    unsigned char mask[5], first;
    int pn_length;
    if (header_mask(self, in, packet.len, pn_offset, mask, &first, &pn_length) < 0)
        goto done;
    header = PyBytes_FromStringAndSize(NULL, pn_offset + pn_length);
    if (header == NULL)
        goto done;
    uint64_t truncated = unmask_header(in, pn_offset, pn_length, first, mask,
                                       (unsigned char *)PyBytes_AS_STRING(header));
    result = Py_BuildValue("(OK)", header, (unsigned long long)truncated);
done:
    Py_XDECREF(header);
    PyBuffer_Release(&packet);
    return result;
}

static PyMethodDef hp_methods[] = {
    {"mask", (PyCFunction)hp_mask_method, METH_VARARGS,
     "mask(sample) -> the 5-byte header protection mask of a 16-byte sample"},
    {"apply", (PyCFunction)hp_apply, METH_VARARGS,
     "apply(plain_header, protected_payload) -> the packet with its header protected "
     "(aioquic's HeaderProtection.apply)"},
    {"remove", (PyCFunction)hp_remove, METH_VARARGS,
     "remove(packet, pn_offset) -> (plain header through the packet number, truncated "
     "packet number) (aioquic's HeaderProtection.remove)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject HeaderProtectionType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "quicstore._native.HeaderProtection",
    .tp_doc = "HeaderProtection(cipher_name, key): QUIC header protection (RFC 9001 5.4); "
              "cipher_name is b'aes-128-ecb', b'aes-256-ecb' or b'chacha20'.",
    .tp_basicsize = sizeof(HeaderProtectionObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)hp_init,
    .tp_dealloc = (destructor)hp_dealloc,
    .tp_methods = hp_methods,
};

/* ------------------------------------------------------------------ whole packets */

/* RFC 9000 appendix A.3. */
static uint64_t decode_packet_number(uint64_t truncated, int bits, uint64_t expected) {
    uint64_t window = (uint64_t)1 << bits;
    uint64_t half = window / 2;
    uint64_t candidate = (expected & ~(window - 1)) | truncated;
    if (candidate + half <= expected && candidate < ((uint64_t)1 << 62) - window)
        return candidate + window;
    if (candidate > expected + half && candidate >= window)
        return candidate - window;
    return candidate;
}

static int check_types(PyObject *aead, PyObject *hp) {
    if (!PyObject_TypeCheck(aead, &AeadType) ||
        !PyObject_TypeCheck(hp, &HeaderProtectionType)) {
        PyErr_SetString(PyExc_TypeError, "expected quicstore._native AEAD and HeaderProtection");
        return -1;
    }
    return 0;
}

/* seal(aead, hp, plain_header, plain_payload, packet_number) -> protected packet */
static PyObject *seal(PyObject *module, PyObject *args) {
    PyObject *aead, *hp;
    Py_buffer header, payload;
    unsigned long long packet_number;
    (void)module;
    if (!PyArg_ParseTuple(args, "OOy*y*K", &aead, &hp, &header, &payload, &packet_number))
        return NULL;
    PyObject *result = NULL;
    if (check_types(aead, hp) < 0)
        goto done;
    if (header.len < 1) {
        PyErr_SetString(ProtectionError, "Empty header");
        goto done;
    }
    const unsigned char *plain = header.buf;
    int pn_length = (plain[0] & 0x03) + 1;
    Py_ssize_t pn_offset = header.len - pn_length;
    /* The sample starts 4 bytes after the packet number's start (RFC 9001 5.4.2). */
    if (pn_offset < 1 ||
        payload.len + TAG_LENGTH < PACKET_NUMBER_LENGTH_MAX - pn_length + SAMPLE_LENGTH) {
        PyErr_SetString(ProtectionError, "Packet is too short to sample");
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, header.len + payload.len + TAG_LENGTH);
    if (result == NULL)
        goto done;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    unsigned char mask[5];
    memcpy(out, plain, header.len);
    if (aead_seal((AeadObject *)aead, plain, header.len, payload.buf, payload.len,
                  out + header.len, packet_number) < 0 ||
        hp_mask((HeaderProtectionObject *)hp, out + pn_offset + PACKET_NUMBER_LENGTH_MAX,
                mask) < 0) {
        Py_CLEAR(result);
        goto done;
    }
    hp_xor(out, pn_offset, pn_length, mask);
done:
    PyBuffer_Release(&header);
    PyBuffer_Release(&payload);
    return result;
}

/*
 * open(aead, hp, packet, pn_offset, expected_packet_number, key_phase)
 *   -> (plain_header, payload or None, packet_number)
 * payload is None when the packet's key phase bit differs from key_phase (a short header):
 * the caller decrypts with the next key phase's AEAD (open_payload). Raises ProtectionError
 * if the packet is too short or not authentic.
 */
static PyObject *open_packet(PyObject *module, PyObject *args) {
    PyObject *aead, *hp;
    Py_buffer packet;
    Py_ssize_t pn_offset;
    unsigned long long expected;
    int key_phase;
    (void)module;
    if (!PyArg_ParseTuple(args, "OOy*nKi", &aead, &hp, &packet, &pn_offset, &expected,
                          &key_phase))
        return NULL;
    PyObject *result = NULL, *header_bytes = NULL, *payload_bytes = NULL;
    if (check_types(aead, hp) < 0)
        goto done;
    const unsigned char *in = packet.buf;
    unsigned char mask[5], first;
    int pn_length;
    if (header_mask((HeaderProtectionObject *)hp, in, packet.len, pn_offset, mask, &first,
                    &pn_length) < 0)
        goto done;
    Py_ssize_t header_length = pn_offset + pn_length;
    header_bytes = PyBytes_FromStringAndSize(NULL, header_length);
    if (header_bytes == NULL)
        goto done;
    unsigned char *plain = (unsigned char *)PyBytes_AS_STRING(header_bytes);
    uint64_t truncated = unmask_header(in, pn_offset, pn_length, first, mask, plain);
    uint64_t number = decode_packet_number(truncated, pn_length * 8, expected);
    int long_header = (first & 0x80) != 0;
    if (!long_header && ((first & 0x04) >> 2) != key_phase) {
        payload_bytes = Py_NewRef(Py_None);
    } else {
        Py_ssize_t body = packet.len - header_length;
        if (body < TAG_LENGTH) {
            PyErr_SetString(ProtectionError, "Payload decryption failed");
            goto done;
        }
        payload_bytes = PyBytes_FromStringAndSize(NULL, body - TAG_LENGTH);
        if (payload_bytes == NULL)
            goto done;
        if (!aead_open((AeadObject *)aead, plain, header_length, in + header_length, body,
                       (unsigned char *)PyBytes_AS_STRING(payload_bytes), number)) {
            PyErr_SetString(ProtectionError, "Payload decryption failed");
            goto done;
        }
    }
    result = Py_BuildValue("(OOK)", header_bytes, payload_bytes, (unsigned long long)number);
done:
    Py_XDECREF(header_bytes);
    Py_XDECREF(payload_bytes);
    PyBuffer_Release(&packet);
    return result;
}

static int varint_size(uint64_t value) {
    return value < 64 ? 1 : value < 16384 ? 2 : value < 1073741824 ? 4 : 8;
}

static unsigned char *put_varint(unsigned char *out, uint64_t value) {
    int size = varint_size(value);
    static const unsigned char prefix[9] = {0, 0x00, 0x40, 0, 0x80, 0, 0, 0, 0xC0};
    for (int i = size - 1; i >= 0; i--) {
        out[i] = (unsigned char)(value & 0xFF);
        value >>= 8;
    }
    out[0] |= prefix[size];
    return out + size;
}

#define VARINT_MAX (((uint64_t)1 << 62) - 1)
#define MAX_CONTINUATIONS 8 /* buffers a packet run may continue into after `data` */
#define SHORT_PN_LENGTH 2 /* aioquic's send size; the receiver decodes by its window */

/*
 * seal_stream_packets(aead, hp, header, packet_number, stream_id, offset, data, fin,
 *                     packet_size, max_packets[, prefix, whole_only, next]) -> (packets, ends)
 *
 * Cuts `data` (the stream's bytes from `offset`) into 1-RTT packets of at most
 * `packet_size` bytes, each a short header (`header`: the first byte, whose packet number
 * length bits must say 2, and the destination connection ID, then a 2-byte packet number
 * from `packet_number` upwards) and one STREAM frame (with offset and length), sealed and
 * header-protected. At most `max_packets`; FIN on the packet carrying the last byte if `fin`.
 * `prefix`, if given, is frames (an ACK, say) placed before the STREAM frame of the first
 * packet, which carries that much less data; with no data to send (and no FIN) the first
 * packet holds the prefix alone. With `whole_only`, no packet is cut shorter than its size
 * allows (the caller has more of the stream right after `data` and sends the rest later,
 * joined with that). `next`, if given, is a sequence of up to 8 buffers holding the stream's
 * bytes right after `data` (the buffers written after it): the data continues through them,
 * and a packet may take bytes from several. The data is encrypted from these buffers into
 * the packets, without a copy in the clear.
 * Returns the packets (bytes) and the stream offset at which each packet's data ends.
 */
static PyObject *seal_stream_packets(PyObject *module, PyObject *args) {
    PyObject *aead, *hp, *next_object = Py_None, *next_sequence = NULL;
    Py_buffer header, data, prefix = {0};
    Py_buffer nexts[MAX_CONTINUATIONS];
    int next_count = 0;
    unsigned long long packet_number, stream_id, offset;
    int fin, whole_only = 0;
    Py_ssize_t packet_size, max_packets;
    (void)module;
    if (!PyArg_ParseTuple(args, "OOy*KKKy*pnn|y*pO", &aead, &hp, &header, &packet_number,
                          &stream_id, &offset, &data, &fin, &packet_size, &max_packets,
                          &prefix, &whole_only, &next_object))
        return NULL;
    PyObject *packets = NULL, *ends = NULL, *result = NULL;
    /* The stream's bytes are `data`, then each buffer of `next` in turn (the buffers written
     * after it): the sources the packets' data is encrypted from. */
    const unsigned char *sources[1 + MAX_CONTINUATIONS];
    Py_ssize_t source_lengths[1 + MAX_CONTINUATIONS];
    int source_count = 1;
    sources[0] = data.buf;
    source_lengths[0] = data.len;
    Py_ssize_t data_length = data.len;
    if (next_object != Py_None) {
        next_sequence = PySequence_Fast(next_object, "next must be a sequence of buffers");
        if (next_sequence == NULL)
            goto done;
        if (PySequence_Fast_GET_SIZE(next_sequence) > MAX_CONTINUATIONS) {
            PyErr_SetString(PyExc_ValueError, "too many buffers in next");
            goto done;
        }
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(next_sequence); i++) {
            if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(next_sequence, i), &nexts[i],
                                   PyBUF_SIMPLE) < 0)
                goto done;
            next_count++;
            sources[source_count] = nexts[i].buf;
            source_lengths[source_count++] = nexts[i].len;
            data_length += nexts[i].len;
        }
    }
    if (check_types(aead, hp) < 0)
        goto done;
    const unsigned char *head = header.buf;
    if (header.len < 1 || header.len > 21 || (head[0] & 0xC3) != (0x40 | (SHORT_PN_LENGTH - 1)) ||
        stream_id > VARINT_MAX || offset > VARINT_MAX ||
        (uint64_t)data_length > VARINT_MAX - offset || data_length < data.len ||
        packet_number > VARINT_MAX || max_packets < 0 || packet_size > 65527 ||
        prefix.len > packet_size - (Py_ssize_t)header.len - SHORT_PN_LENGTH - TAG_LENGTH) {
        PyErr_SetString(PyExc_ValueError, "invalid short header, stream or packet arguments");
        goto done;
    }
    Py_ssize_t pn_offset = header.len;
    Py_ssize_t payload_start = pn_offset + SHORT_PN_LENGTH;
    packets = PyList_New(0);
    ends = PyList_New(0);
    if (packets == NULL || ends == NULL)
        goto done;
    int source_index = 0;       /* where the next packet's data starts: this source, */
    Py_ssize_t source_offset = 0; /* at this offset in it */
    Py_ssize_t sent = 0;
    for (Py_ssize_t count = 0; count < max_packets; count++) {
        Py_ssize_t remaining = data_length - sent;
        Py_ssize_t lead = count == 0 ? prefix.len : 0;
        int stream_frame = remaining > 0 || (fin && count == 0 && data_length == 0);
        if (!stream_frame && lead == 0)
            break;
        uint64_t frame_offset = offset + (uint64_t)sent;
        Py_ssize_t fixed = 1 + varint_size(stream_id) + (frame_offset ? varint_size(frame_offset) : 0);
        Py_ssize_t room = packet_size - payload_start - TAG_LENGTH - lead - fixed;
        /* The largest data length whose own length varint still fits in the room. */
        Py_ssize_t length = 0;
        if (room >= 4 + 16384)
            length = room - 4;
        else if (room >= 2 + 64)
            length = room - 2 > 16383 ? 16383 : room - 2;
        else if (room >= 1 + 1)
            length = room - 1 > 63 ? 63 : room - 1;
        if (length > remaining) {
            if (whole_only)
                break;
            length = remaining;
        }
        if (length <= 0 && remaining > 0) {
            if (lead == 0)
                break; /* no room for data in a packet of this size */
            stream_frame = 0; /* the prefix fills the first packet */
        }
        if (!stream_frame)
            length = 0;
        int last = stream_frame && (sent + length == data_length);
        int frame_fin = fin && last;
        Py_ssize_t frame_length =
            lead + (stream_frame ? fixed + varint_size((uint64_t)length) + length : 0);
        /* PADDING so the header-protection sample (4 bytes past the packet number's start)
         * lies within the packet, for a prefix of one byte alone. */
        Py_ssize_t padding = 0;
        if (frame_length < 4 - SHORT_PN_LENGTH)
            padding = 4 - SHORT_PN_LENGTH - frame_length;
        frame_length += padding;
        Py_ssize_t total = payload_start + frame_length + TAG_LENGTH;
        PyObject *packet = PyBytes_FromStringAndSize(NULL, total);
        if (packet == NULL)
            goto done;
        unsigned char *out = (unsigned char *)PyBytes_AS_STRING(packet);
        memcpy(out, head, header.len);
        uint64_t number = packet_number + (uint64_t)count;
        out[pn_offset] = (unsigned char)(number >> 8);
        out[pn_offset + 1] = (unsigned char)number;
        unsigned char *frame = out + payload_start;
        unsigned char *cursor = frame;
        /* Encrypted in parts: the frame bytes written here, the data from each source it
         * spans (never copied into the packet in the clear), the padding. */
        const unsigned char *ins[3 + MAX_CONTINUATIONS];
        Py_ssize_t lengths[3 + MAX_CONTINUATIONS];
        int parts = 1;
        if (lead) {
            memcpy(cursor, prefix.buf, lead);
            cursor += lead;
        }
        if (stream_frame) {
            *cursor++ = 0x08 | (frame_offset ? 0x04 : 0) | 0x02 | (frame_fin ? 0x01 : 0);
            cursor = put_varint(cursor, stream_id);
            if (frame_offset)
                cursor = put_varint(cursor, frame_offset);
            cursor = put_varint(cursor, (uint64_t)length);
        }
        ins[0] = frame;
        lengths[0] = cursor - frame;
        Py_ssize_t wanted = length;
        while (wanted > 0 && source_index < source_count) {
            Py_ssize_t available = source_lengths[source_index] - source_offset;
            if (available == 0) {
                source_index++;
                source_offset = 0;
                continue;
            }
            Py_ssize_t take = available < wanted ? available : wanted;
            ins[parts] = sources[source_index] + source_offset;
            lengths[parts++] = take;
            source_offset += take;
            wanted -= take;
        }
        if (wanted > 0) { /* cannot happen: length never exceeds what the sources hold */
            Py_DECREF(packet);
            PyErr_SetString(PyExc_SystemError, "stream data sources ran out");
            goto done;
        }
        cursor += length;
        memset(cursor, 0, padding);
        ins[parts] = cursor;
        lengths[parts++] = padding;
        unsigned char mask[5];
        if (aead_seal_parts((AeadObject *)aead, out, payload_start, ins, lengths, parts, frame,
                            number) < 0 ||
            hp_mask((HeaderProtectionObject *)hp, out + pn_offset + PACKET_NUMBER_LENGTH_MAX,
                    mask) < 0) {
            Py_DECREF(packet);
            goto done;
        }
        hp_xor(out, pn_offset, SHORT_PN_LENGTH, mask);
        sent += length;
        PyObject *end = PyLong_FromUnsignedLongLong(offset + (uint64_t)sent);
        int failed = end == NULL || PyList_Append(packets, packet) < 0 ||
                     PyList_Append(ends, end) < 0;
        Py_DECREF(packet);
        Py_XDECREF(end);
        if (failed)
            goto done;
        if (last)
            break;
    }
    result = PyTuple_Pack(2, packets, ends);
done:
    Py_XDECREF(packets);
    Py_XDECREF(ends);
    PyBuffer_Release(&header);
    PyBuffer_Release(&data);
    if (prefix.obj != NULL)
        PyBuffer_Release(&prefix);
    for (int i = 0; i < next_count; i++)
        PyBuffer_Release(&nexts[i]);
    Py_XDECREF(next_sequence);
    return result;
}

/* ------------------------------------------------------------------ receiving in batches */

static int read_varint(const unsigned char **cursor, const unsigned char *end, uint64_t *value) {
    const unsigned char *p = *cursor;
    if (p >= end)
        return -1;
    int size = 1 << (p[0] >> 6);
    if (end - p < size)
        return -1;
    uint64_t v = p[0] & 0x3F;
    for (int i = 1; i < size; i++)
        v = (v << 8) | p[i];
    *value = v;
    *cursor = p + size;
    return 0;
}

typedef struct {
    uint64_t stream_id, offset;
    int fin;
    size_t length;
} Segment;

/* A STREAM frame's data where it lies in the decrypted payloads, for segment `segment`. */
typedef struct {
    const unsigned char *data;
    size_t length;
    int segment;
} Piece;

#define MAX_SEGMENTS 256
#define MAX_PIECES 1024
#define MAX_ACKS 256

/* Each stream's contiguous data across a batch, as pieces of the decrypted payloads: copied
 * once, into the bytes handed to Python, when the batch is done. */
typedef struct {
    Segment segments[MAX_SEGMENTS];
    int segment_count;
    Piece pieces[MAX_PIECES];
    int piece_count;
} Segments;

/* Append a STREAM frame's data, joined to the stream's last segment when contiguous; -1
 * when the batch holds more segments or pieces than the tables (aioquic takes it then). */
static int segments_add(Segments *all, uint64_t stream_id, uint64_t offset,
                        const unsigned char *data, size_t length, int fin) {
    int index = -1;
    for (int i = all->segment_count - 1; i >= 0; i--) {
        if (all->segments[i].stream_id == stream_id) {
            Segment *last = &all->segments[i];
            if (!last->fin && last->offset + last->length == offset)
                index = i;
            break;
        }
    }
    if (length && all->piece_count == MAX_PIECES)
        return -1;
    if (index < 0) {
        if (all->segment_count == MAX_SEGMENTS)
            return -1;
        index = all->segment_count++;
        Segment *fresh = &all->segments[index];
        fresh->stream_id = stream_id;
        fresh->offset = offset;
        fresh->length = 0;
    }
    Segment *segment = &all->segments[index];
    if (length) {
        Piece *piece = &all->pieces[all->piece_count++];
        piece->data = data;
        piece->length = length;
        piece->segment = index;
    }
    segment->length += length;
    segment->fin = fin;
    return 0;
}

/* The segments as a list of (stream_id, offset, data, fin), each segment's pieces copied
 * into its bytes in order; NULL with an exception set on failure. */
static PyObject *segments_build(const Segments *all) {
    PyObject *streams = PyList_New(all->segment_count);
    size_t filled[MAX_SEGMENTS];
    char *targets[MAX_SEGMENTS];
    if (streams == NULL)
        return NULL;
    for (int i = 0; i < all->segment_count; i++) {
        const Segment *segment = &all->segments[i];
        PyObject *data = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)segment->length);
        if (data == NULL) {
            Py_DECREF(streams);
            return NULL;
        }
        targets[i] = PyBytes_AS_STRING(data);
        filled[i] = 0;
        PyObject *entry = Py_BuildValue("(KKOO)", (unsigned long long)segment->stream_id,
                                        (unsigned long long)segment->offset, data,
                                        segment->fin ? Py_True : Py_False);
        Py_DECREF(data); /* the entry holds it (targets[i] stays valid) */
        if (entry == NULL) {
            Py_DECREF(streams);
            return NULL;
        }
        PyList_SET_ITEM(streams, i, entry);
    }
    for (int i = 0; i < all->piece_count; i++) {
        const Piece *piece = &all->pieces[i];
        memcpy(targets[piece->segment] + filled[piece->segment], piece->data, piece->length);
        filled[piece->segment] += piece->length;
    }
    return streams;
}

/* Parse a decrypted 1-RTT payload: 0 if every frame is PADDING, PING, ACK or STREAM (and
 * well formed), -1 otherwise (the caller hands the datagrams to aioquic instead). */
static int parse_payload(const unsigned char *p, const unsigned char *end, Segments *all,
                         PyObject *acks, int *ack_eliciting) {
    while (p < end) {
        uint64_t type;
        if (read_varint(&p, end, &type) < 0)
            return -1;
        if (type == 0x00) { /* PADDING */
            continue;
        } else if (type == 0x01) { /* PING */
            *ack_eliciting = 1;
        } else if (type == 0x02 || type == 0x03) { /* ACK: handed to aioquic as bytes */
            const unsigned char *start = p;
            uint64_t largest, delay, count, first, gap, length, ecn;
            if (read_varint(&p, end, &largest) < 0 || read_varint(&p, end, &delay) < 0 ||
                read_varint(&p, end, &count) < 0 || read_varint(&p, end, &first) < 0 ||
                count > 4096)
                return -1;
            for (uint64_t i = 0; i < count; i++)
                if (read_varint(&p, end, &gap) < 0 || read_varint(&p, end, &length) < 0)
                    return -1;
            if (type == 0x03)
                for (int i = 0; i < 3; i++)
                    if (read_varint(&p, end, &ecn) < 0)
                        return -1;
            if (PyList_GET_SIZE(acks) >= MAX_ACKS)
                return -1;
            PyObject *frame = Py_BuildValue("(Ky#)", (unsigned long long)type, start,
                                            (Py_ssize_t)(p - start));
            if (frame == NULL)
                return -2;
            int failed = PyList_Append(acks, frame);
            Py_DECREF(frame);
            if (failed < 0)
                return -2;
        } else if (type >= 0x08 && type <= 0x0F) { /* STREAM */
            uint64_t stream_id, offset = 0, length;
            if (read_varint(&p, end, &stream_id) < 0)
                return -1;
            if ((type & 0x04) && read_varint(&p, end, &offset) < 0)
                return -1;
            if (type & 0x02) {
                if (read_varint(&p, end, &length) < 0 || length > (uint64_t)(end - p))
                    return -1;
            } else {
                length = (uint64_t)(end - p);
            }
            if (offset > VARINT_MAX - length)
                return -1;
            if (segments_add(all, stream_id, offset, p, (size_t)length, (int)(type & 0x01)) < 0)
                return -1;
            p += length;
            *ack_eliciting = 1;
        } else {
            return -1;
        }
    }
    return 0;
}

/*
 * open_stream_packets(aead, hp, datagrams, dcid, expected_packet_number, key_phase)
 *   -> (packet_numbers, highest_first_byte, ack_eliciting, streams, acks) or None
 *
 * Opens a batch of 1-RTT datagrams (one short-header packet each, to `dcid`, in the current
 * key phase) and parses their frames, joining each stream's contiguous data across packets:
 * streams is a list of (stream_id, offset, data, fin), acks a list of (frame_type, frame
 * bytes after the type) for aioquic's ACK handling. None if any datagram is anything else
 * (a long header, another connection ID or key phase, a packet that does not open, reserved
 * bits set, a frame other than PADDING, PING, ACK or STREAM): nothing has changed then, and
 * the caller hands the datagrams to aioquic one by one.
 */
static PyObject *open_stream_packets(PyObject *module, PyObject *args) {
    PyObject *aead, *hp, *datagrams;
    Py_buffer dcid;
    unsigned long long expected;
    int key_phase;
    (void)module;
    if (!PyArg_ParseTuple(args, "OOO!y*Ki", &aead, &hp, &PyList_Type, &datagrams, &dcid,
                          &expected, &key_phase))
        return NULL;
    PyObject *result = NULL, *numbers = NULL, *acks = NULL, *streams = NULL;
    unsigned char *plain = NULL;
    Segments *all = malloc(sizeof(Segments));
    if (all == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    all->segment_count = all->piece_count = 0;
    if (check_types(aead, hp) < 0)
        goto done;
    if (dcid.len > 20) {
        PyErr_SetString(PyExc_ValueError, "connection IDs are at most 20 bytes");
        goto done;
    }
    numbers = PyList_New(0);
    acks = PyList_New(0);
    if (numbers == NULL || acks == NULL)
        goto done;
    int ack_eliciting = 0, highest_first = 0, fallback = 0;
    uint64_t highest = 0;
    Py_ssize_t count = PyList_GET_SIZE(datagrams);
    /* Every payload keeps its own room: the stream data is copied out only at the end. */
    Py_ssize_t room = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(datagrams, i);
        if (PyBytes_Check(item) && PyBytes_GET_SIZE(item) <= 65536)
            room += PyBytes_GET_SIZE(item);
    }
    plain = malloc(room ? (size_t)room : 1);
    if (plain == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t used = 0;
    Py_ssize_t pn_offset = 1 + dcid.len;
    for (Py_ssize_t i = 0; i < count && !fallback; i++) {
        PyObject *item = PyList_GET_ITEM(datagrams, i);
        if (!PyBytes_Check(item)) {
            fallback = 1;
            break;
        }
        const unsigned char *in = (const unsigned char *)PyBytes_AS_STRING(item);
        Py_ssize_t size = PyBytes_GET_SIZE(item);
        if (size > 65536 || size - pn_offset < PACKET_NUMBER_LENGTH_MAX + SAMPLE_LENGTH ||
            (in[0] & 0xC0) != 0x40 || memcmp(in + 1, dcid.buf, dcid.len) != 0) {
            fallback = 1;
            break;
        }
        unsigned char mask[5], first;
        int pn_length;
        if (header_mask((HeaderProtectionObject *)hp, in, size, pn_offset, mask, &first,
                        &pn_length) < 0)
            goto done;
        if ((first & 0x18) || ((first & 0x04) >> 2) != key_phase) {
            fallback = 1;
            break;
        }
        unsigned char header[32];
        uint64_t truncated = unmask_header(in, pn_offset, pn_length, first, mask, header);
        uint64_t number = decode_packet_number(truncated, pn_length * 8, expected);
        Py_ssize_t header_length = pn_offset + pn_length;
        Py_ssize_t body = size - header_length;
        unsigned char *payload = plain + used;
        if (body < TAG_LENGTH ||
            !aead_open((AeadObject *)aead, header, header_length, in + header_length, body,
                       payload, number)) {
            fallback = 1;
            break;
        }
        used += body;
        int status =
            parse_payload(payload, payload + body - TAG_LENGTH, all, acks, &ack_eliciting);
        if (status == -2)
            goto done;
        if (status < 0) {
            fallback = 1;
            break;
        }
        PyObject *value = PyLong_FromUnsignedLongLong(number);
        if (value == NULL || PyList_Append(numbers, value) < 0) {
            Py_XDECREF(value);
            goto done;
        }
        Py_DECREF(value);
        if (i == 0 || number > highest) {
            highest = number;
            highest_first = first;
        }
        if (number > expected) /* as aioquic advances space.expected_packet_number */
            expected = number + 1;
    }
    if (fallback) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    streams = segments_build(all);
    if (streams == NULL)
        goto done;
    result = Py_BuildValue("(OiOOO)", numbers, highest_first,
                           ack_eliciting ? Py_True : Py_False, streams, acks);
done:
    free(all);
    free(plain);
    Py_XDECREF(numbers);
    Py_XDECREF(acks);
    Py_XDECREF(streams);
    PyBuffer_Release(&dcid);
    return result;
}

static PyMethodDef module_methods[] = {
    {"open_stream_packets", open_stream_packets, METH_VARARGS,
     "open_stream_packets(aead, hp, datagrams, dcid, expected_packet_number, key_phase) -> "
     "(packet_numbers, highest_first_byte, ack_eliciting, streams, acks), or None if any "
     "datagram needs aioquic's full receive path"},
    {"seal_stream_packets", seal_stream_packets, METH_VARARGS,
     "seal_stream_packets(aead, hp, header, packet_number, stream_id, offset, data, fin, "
     "packet_size, max_packets[, prefix, whole_only, next]) -> (packets, ends): a stream's "
     "bytes (data, then each buffer in next) as sealed 1-RTT packets of one STREAM frame each (the first led "
     "by the frames in prefix; with whole_only, none cut short), and the stream offset each "
     "packet's data ends at"},
    {"seal", seal, METH_VARARGS,
     "seal(aead, hp, plain_header, plain_payload, packet_number) -> bytes: the packet with "
     "its payload encrypted and its header protected, in one call"},
    {"open", open_packet, METH_VARARGS,
     "open(aead, hp, packet, pn_offset, expected_packet_number, key_phase) -> (plain_header, "
     "payload, packet_number); payload is None if the short header's key phase differs"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "quicstore._native",
    .m_doc = "QUIC packet protection in C over OpenSSL (quicstore's native data plane).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__native(void) {
    if (PyType_Ready(&AeadType) < 0 || PyType_Ready(&HeaderProtectionType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&native_module);
    if (module == NULL)
        return NULL;
    /* Failures are aioquic's CryptoError where aioquic is installed, so its receive path
     * treats a forged packet from either path alike (it drops it). */
    PyObject *base = NULL;
    PyObject *aioquic_crypto = PyImport_ImportModule("aioquic._crypto");
    if (aioquic_crypto != NULL) {
        base = PyObject_GetAttrString(aioquic_crypto, "CryptoError");
        Py_DECREF(aioquic_crypto);
    }
    if (base == NULL) {
        PyErr_Clear();
        base = Py_NewRef(PyExc_ValueError);
    }
    ProtectionError = PyErr_NewExceptionWithDoc(
        "quicstore._native.ProtectionError",
        "A packet that cannot be protected or unprotected (too short, forged, bad key).",
        base, NULL);
    Py_DECREF(base);
    if (ProtectionError == NULL ||
        PyModule_AddObjectRef(module, "ProtectionError", ProtectionError) < 0 ||
        PyModule_AddObjectRef(module, "AEAD", (PyObject *)&AeadType) < 0 ||
        PyModule_AddObjectRef(module, "HeaderProtection", (PyObject *)&HeaderProtectionType) <
            0 ||
        PyModule_AddIntConstant(module, "TAG_LENGTH", TAG_LENGTH) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
