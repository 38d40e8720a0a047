// SPDX-License-Identifier: MIT
/*
 * libFuzzer target: TWSHIM_OPTIONS text. Any input must give either a config
 * or -EINVAL with one line of text, never a crash, a leak or a read past the
 * end; a config must resolve.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct conf_source src = { .comm = "fuzz" };
	struct tw_policy p;
	struct conf *c;
	char err[256];
	char *text;
	int ret;

	text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	src.options = text;
	ret = conf_load(&c, &src, err, sizeof(err));
	if (ret) {
		if (ret != -EINVAL || c || !err[0] || strchr(err, '\n'))
			abort();
	} else {
		conf_resolve(c, TW_ROLE_CLIENT, NULL, 0, 80, (uint64_t)size, &p);
		if (p.sink != TW_SINK_NONE && !conf_sink(c, p.sink))
			abort();
		conf_free(c);
	}
	free(text);
	return 0;
}
