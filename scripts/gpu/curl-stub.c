/* A stand-in libcurl.so.4 for the `ddpo` binary that runs on the GPU machine.
 *
 * Swift's static Foundation pulls in libcurl (URLSession, used only by the http:// reward). The
 * device machine may not have libcurl, and carrying the real one means carrying OpenSSL and a dozen
 * more libraries, so scripts/build-gpu-bin.sh links the GPU build against this stub instead: every
 * entry point fails cleanly (CURLE_FAILED_INIT / NULL), so an http:// reward there reports an error
 * rather than crashing. Nothing else in `ddpo` touches the network.
 */
#include <stddef.h>

#define FAILED 2 /* CURLE_FAILED_INIT / CURLM_BAD_HANDLE-like: any non-zero is an error */

void *curl_easy_init(void) { return NULL; }
void curl_easy_cleanup(void *h) { (void)h; }
int curl_easy_getinfo(void *h, int info, ...) { (void)h; (void)info; return FAILED; }
int curl_easy_pause(void *h, int mask) { (void)h; (void)mask; return FAILED; }
int curl_easy_setopt(void *h, int option, ...) { (void)h; (void)option; return FAILED; }
const char *curl_easy_strerror(int code) { (void)code; return "libcurl is not available in this build (GPU bundle stub)"; }
void curl_free(void *p) { (void)p; }
int curl_global_init(long flags) { (void)flags; return FAILED; }
void *curl_multi_init(void) { return NULL; }
int curl_multi_cleanup(void *m) { (void)m; return FAILED; }
int curl_multi_add_handle(void *m, void *h) { (void)m; (void)h; return FAILED; }
int curl_multi_remove_handle(void *m, void *h) { (void)m; (void)h; return FAILED; }
int curl_multi_assign(void *m, int s, void *p) { (void)m; (void)s; (void)p; return FAILED; }
void *curl_multi_info_read(void *m, int *left) { (void)m; if (left) *left = 0; return NULL; }
int curl_multi_setopt(void *m, int option, ...) { (void)m; (void)option; return FAILED; }
int curl_multi_socket_action(void *m, int s, int mask, int *running) { (void)m; (void)s; (void)mask; if (running) *running = 0; return FAILED; }
void *curl_slist_append(void *list, const char *s) { (void)s; return list; }
void curl_slist_free_all(void *list) { (void)list; }
void *curl_url(void) { return NULL; }
int curl_url_get(void *u, int part, char **out, unsigned flags) { (void)u; (void)part; (void)flags; if (out) *out = NULL; return FAILED; }
int curl_url_set(void *u, int part, const char *s, unsigned flags) { (void)u; (void)part; (void)s; (void)flags; return FAILED; }
char *curl_version(void) { return (char *)"libcurl-stub"; }
void *curl_version_info(int age) { (void)age; return NULL; }
