/* Built as C: proves sharegpu/broker-client.h is plain C and links from a C program. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "sharegpu/broker-client.h"

int main(void)
{
    sgbk_client *c = NULL;
    sgbk_id id, back;
    char text[33];
    int err = sgbk_client_connect("/nonexistent/sharegpu-broker.sock", "vm-c", 0, &c);

    if (err != -ENOENT || c != NULL) {
        fprintf(stderr, "connect without a broker: %d (%s)\n", err, sgbk_strerror(err));
        return 1;
    }
    memset(&id, 0xa5, sizeof(id));
    sgbk_id_format(&id, text);
    if (sgbk_id_parse(text, &back) != 0 || memcmp(&id, &back, sizeof(id)) != 0 ||
        sgbk_id_parse("not-an-id", &back) != -EINVAL) {
        fprintf(stderr, "id round trip failed (%s)\n", text);
        return 1;
    }
    printf("broker-client C API: ok (%s)\n", text);
    return 0;
}
