/*
 * Whole-image JPEG encode/decode on top of libjpeg(-turbo), for TensorKit's ImageIO.swift.
 *
 * Why this exists: libjpeg reports fatal errors by calling error_exit(), which must not
 * return; the default one calls exit(). The only way to recover is setjmp/longjmp, and
 * Swift cannot call setjmp. So every libjpeg call happens inside one C function per
 * operation that owns the setjmp, and Swift only sees "status + message".
 *
 * Header-only (static inline): the Swift compiler emits these bodies itself, so the
 * system-library target needs no C sources.
 *
 * setjmp rule followed here: after longjmp, non-volatile locals of the function that called
 * setjmp are indeterminate if they changed after setjmp. All state that changes lives in a
 * job struct owned by the caller and reached through a pointer argument that never changes.
 */
#ifndef TENSORKIT_JPEG_SHIM_H
#define TENSORKIT_JPEG_SHIM_H

#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>
#include <jerror.h>

#define TK_JPEG_MESSAGE_LENGTH JMSG_LENGTH_MAX

/* Outcome of tk_jpeg_encode_rgb / tk_jpeg_decode_rgb. On success status is 0 and `data`
 * is a malloc'd buffer of `size` bytes that the caller releases with tk_jpeg_free.
 * On failure status is non-zero, data is NULL and `message` holds the reason. */
typedef struct tk_jpeg_result {
    int status;
    unsigned char *data;
    size_t size;
    int width;       /* decode only */
    int height;      /* decode only */
    int warnings;    /* decode only: recoverable corrupt-data warnings libjpeg reported */
    char message[TK_JPEG_MESSAGE_LENGTH];
} tk_jpeg_result;

static inline void tk_jpeg_free(void *data) { free(data); }

/* ---- Error manager: fatal errors and (optionally) warnings jump back to the caller. ---- */

typedef struct tk_jpeg_error_mgr {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    int fail_on_warning;
    int have_message;
    char message[TK_JPEG_MESSAGE_LENGTH];
} tk_jpeg_error_mgr;

static inline void tk_jpeg_error_exit(j_common_ptr cinfo) {
    tk_jpeg_error_mgr *err = (tk_jpeg_error_mgr *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->message);
    err->have_message = 1;
    longjmp(err->jump, 1);
}

/* msg_level < 0 is a warning (corrupt but recoverable data); >= 0 are trace messages. */
static inline void tk_jpeg_emit_message(j_common_ptr cinfo, int msg_level) {
    tk_jpeg_error_mgr *err = (tk_jpeg_error_mgr *)cinfo->err;
    if (msg_level >= 0) return;
    if (!err->have_message) {
        (*cinfo->err->format_message)(cinfo, err->message);
        err->have_message = 1;
    }
    err->pub.num_warnings++;
    if (err->fail_on_warning) longjmp(err->jump, 1);
}

/* The default prints to stderr; a library should not. */
static inline void tk_jpeg_output_message(j_common_ptr cinfo) { (void)cinfo; }

static inline void tk_jpeg_install_errors(tk_jpeg_error_mgr *err) {
    jpeg_std_error(&err->pub);
    err->pub.error_exit = tk_jpeg_error_exit;
    err->pub.emit_message = tk_jpeg_emit_message;
    err->pub.output_message = tk_jpeg_output_message;
}

static inline void tk_jpeg_copy_message(tk_jpeg_result *result, const char *message) {
    strncpy(result->message, message, TK_JPEG_MESSAGE_LENGTH - 1);
    result->message[TK_JPEG_MESSAGE_LENGTH - 1] = '\0';
}

/* ---- Growing in-memory destination. Unlike jpeg_mem_dest, the buffer pointer lives in
 * our own struct, so it can be freed after an error instead of leaking. ---- */

typedef struct tk_jpeg_dest {
    struct jpeg_destination_mgr pub;
    unsigned char *buffer;
    size_t capacity;
} tk_jpeg_dest;

static inline void tk_jpeg_dest_init(j_compress_ptr cinfo) {
    tk_jpeg_dest *dest = (tk_jpeg_dest *)cinfo->dest;
    dest->pub.next_output_byte = dest->buffer;
    dest->pub.free_in_buffer = dest->capacity;
}

/* Called when the buffer is completely full (libjpeg ignores next_output_byte here). */
static inline boolean tk_jpeg_dest_grow(j_compress_ptr cinfo) {
    tk_jpeg_dest *dest = (tk_jpeg_dest *)cinfo->dest;
    size_t old_capacity = dest->capacity;
    size_t new_capacity = old_capacity * 2;
    unsigned char *grown = NULL;
    if (new_capacity > old_capacity) grown = (unsigned char *)realloc(dest->buffer, new_capacity);
    if (grown == NULL) {
        cinfo->err->msg_code = JERR_OUT_OF_MEMORY;
        cinfo->err->msg_parm.i[0] = 0;
        (*cinfo->err->error_exit)((j_common_ptr)cinfo);
    }
    dest->buffer = grown;
    dest->capacity = new_capacity;
    dest->pub.next_output_byte = grown + old_capacity;
    dest->pub.free_in_buffer = new_capacity - old_capacity;
    return TRUE;
}

static inline void tk_jpeg_dest_term(j_compress_ptr cinfo) { (void)cinfo; }

/* ---- Encoding ---- */

typedef struct tk_jpeg_encode_job {
    struct jpeg_compress_struct cinfo;
    tk_jpeg_error_mgr err;
    tk_jpeg_dest dest;
    int created;
    const unsigned char *pixels;
    int width, height, quality, subsampling;
} tk_jpeg_encode_job;

/* The only function that calls setjmp for encoding; all mutable state is in *job. */
static inline int tk_jpeg_encode_run(tk_jpeg_encode_job *job) {
    if (setjmp(job->err.jump)) return -1;
    job->cinfo.err = &job->err.pub;
    jpeg_create_compress(&job->cinfo);
    job->created = 1;

    job->dest.capacity = 16384;
    job->dest.buffer = (unsigned char *)malloc(job->dest.capacity);
    if (job->dest.buffer == NULL) {
        job->cinfo.err->msg_code = JERR_OUT_OF_MEMORY;
        (*job->cinfo.err->error_exit)((j_common_ptr)&job->cinfo);
    }
    job->dest.pub.init_destination = tk_jpeg_dest_init;
    job->dest.pub.empty_output_buffer = tk_jpeg_dest_grow;
    job->dest.pub.term_destination = tk_jpeg_dest_term;
    job->cinfo.dest = &job->dest.pub;

    job->cinfo.image_width = (JDIMENSION)job->width;
    job->cinfo.image_height = (JDIMENSION)job->height;
    job->cinfo.input_components = 3;
    job->cinfo.in_color_space = JCS_RGB;
    /* The same sequence Pillow's JpegEncode.c uses, so the output matches PIL's
     * Image.save(format="JPEG", quality=q) byte for byte for the same libjpeg build. */
    jpeg_set_defaults(&job->cinfo);
    jpeg_set_quality(&job->cinfo, job->quality, TRUE);
    {
        int luma_h = 1, luma_v = 1;
        if (job->subsampling == 1) { luma_h = 2; luma_v = 1; }      /* 4:2:2 */
        else if (job->subsampling == 2) { luma_h = 2; luma_v = 2; } /* 4:2:0 */
        job->cinfo.comp_info[0].h_samp_factor = luma_h;
        job->cinfo.comp_info[0].v_samp_factor = luma_v;
        job->cinfo.comp_info[1].h_samp_factor = 1;
        job->cinfo.comp_info[1].v_samp_factor = 1;
        job->cinfo.comp_info[2].h_samp_factor = 1;
        job->cinfo.comp_info[2].v_samp_factor = 1;
    }
    job->cinfo.optimize_coding = FALSE;
    jpeg_start_compress(&job->cinfo, TRUE);
    {
        size_t row_bytes = (size_t)job->width * 3;
        while (job->cinfo.next_scanline < job->cinfo.image_height) {
            JSAMPROW row = (JSAMPROW)(job->pixels + (size_t)job->cinfo.next_scanline * row_bytes);
            jpeg_write_scanlines(&job->cinfo, &row, 1);
        }
    }
    jpeg_finish_compress(&job->cinfo);
    return 0;
}

/* pixels: height rows of width*3 bytes (RGB). subsampling: 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0.
 * quality 1...100 and dimensions 1...65500 are validated by the caller. */
static inline int tk_jpeg_encode_rgb(const unsigned char *pixels, int width, int height,
                                     int quality, int subsampling, tk_jpeg_result *result) {
    tk_jpeg_encode_job job;
    memset(&job, 0, sizeof job);
    memset(result, 0, sizeof *result);
    tk_jpeg_install_errors(&job.err);
    job.pixels = pixels;
    job.width = width;
    job.height = height;
    job.quality = quality;
    job.subsampling = subsampling;

    int status = tk_jpeg_encode_run(&job);
    size_t size = job.dest.capacity - job.dest.pub.free_in_buffer;
    if (job.created) jpeg_destroy_compress(&job.cinfo);
    if (status != 0) {
        free(job.dest.buffer);
        tk_jpeg_copy_message(result, job.err.message);
        result->status = -1;
        return -1;
    }
    result->data = job.dest.buffer;
    result->size = size;
    return 0;
}

/* ---- Decoding ---- */

typedef struct tk_jpeg_decode_job {
    struct jpeg_decompress_struct cinfo;
    tk_jpeg_error_mgr err;
    int created;
    const unsigned char *data;
    unsigned long size;
    unsigned long long max_pixels;
    unsigned char *pixels;
    int width, height;
} tk_jpeg_decode_job;

static inline int tk_jpeg_decode_run(tk_jpeg_decode_job *job) {
    if (setjmp(job->err.jump)) return -1;
    job->cinfo.err = &job->err.pub;
    jpeg_create_decompress(&job->cinfo);
    job->created = 1;
    jpeg_mem_src(&job->cinfo, job->data, job->size);
    jpeg_read_header(&job->cinfo, TRUE);
    /* Guard against a small file claiming a huge image before allocating anything. */
    if ((unsigned long long)job->cinfo.image_width * job->cinfo.image_height > job->max_pixels) {
        snprintf(job->err.message, sizeof job->err.message,
                 "image is %ux%u pixels, more than the limit of %llu",
                 (unsigned)job->cinfo.image_width, (unsigned)job->cinfo.image_height,
                 job->max_pixels);
        job->err.have_message = 1;
        return -1;
    }
    /* libjpeg converts grayscale and YCbCr to RGB itself; CMYK/YCCK fail here with
     * "Unsupported color conversion request". */
    job->cinfo.out_color_space = JCS_RGB;
    jpeg_start_decompress(&job->cinfo);
    if (job->cinfo.output_components != 3) {
        snprintf(job->err.message, sizeof job->err.message,
                 "decoder produced %d components, expected 3", job->cinfo.output_components);
        job->err.have_message = 1;
        return -1;
    }
    job->width = (int)job->cinfo.output_width;
    job->height = (int)job->cinfo.output_height;
    {
        size_t row_bytes = (size_t)job->width * 3;
        job->pixels = (unsigned char *)malloc(row_bytes * (size_t)job->height);
        if (job->pixels == NULL) {
            job->cinfo.err->msg_code = JERR_OUT_OF_MEMORY;
            (*job->cinfo.err->error_exit)((j_common_ptr)&job->cinfo);
        }
        while (job->cinfo.output_scanline < job->cinfo.output_height) {
            JSAMPROW row = job->pixels + (size_t)job->cinfo.output_scanline * row_bytes;
            jpeg_read_scanlines(&job->cinfo, &row, 1);
        }
    }
    jpeg_finish_decompress(&job->cinfo);
    return 0;
}

/* Decodes any 1- or 3-component JPEG to interleaved RGB (libjpeg defaults: ISLOW IDCT,
 * fancy upsampling, as Pillow). With fail_on_warning, corrupt-but-recoverable data
 * (for example a truncated file, which libjpeg would pad with gray) is an error. */
static inline int tk_jpeg_decode_rgb(const unsigned char *data, unsigned long size,
                                     unsigned long long max_pixels, int fail_on_warning,
                                     tk_jpeg_result *result) {
    tk_jpeg_decode_job job;
    memset(&job, 0, sizeof job);
    memset(result, 0, sizeof *result);
    tk_jpeg_install_errors(&job.err);
    job.err.fail_on_warning = fail_on_warning;
    job.data = data;
    job.size = size;
    job.max_pixels = max_pixels;

    int status = tk_jpeg_decode_run(&job);
    result->warnings = (int)job.err.pub.num_warnings;
    if (job.created) jpeg_destroy_decompress(&job.cinfo);
    if (status != 0) {
        free(job.pixels);
        tk_jpeg_copy_message(result, job.err.have_message ? job.err.message : "unknown libjpeg error");
        result->status = -1;
        return -1;
    }
    if (job.err.have_message) tk_jpeg_copy_message(result, job.err.message);
    result->data = job.pixels;
    result->size = (size_t)job.width * 3 * (size_t)job.height;
    result->width = job.width;
    result->height = job.height;
    return 0;
}

#endif /* TENSORKIT_JPEG_SHIM_H */
