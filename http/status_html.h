/* status_html.h — the status page (http/status.html), compiled in: the Makefile generates
 * $(BUILD)/gen/status_html.c from it with `xxd -i`. */
#ifndef GPT2D_HTTP_STATUS_HTML_H
#define GPT2D_HTTP_STATUS_HTML_H

extern unsigned char status_html[];
extern unsigned int status_html_len;

#endif
