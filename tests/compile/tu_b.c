#include "../../am2z_resp.h"
#include <string.h>

int main(void) {
    am2z_value *v = am2z_json_parse("{\"a\":[1,2.5,\"x\"]}", AM2Z_NTS, NULL, NULL);
    char *text = am2z_json_write(v, AM2Z_JSON_COMPACT, NULL);
    int ok = text && strcmp(text, "{\"a\":[1,2.5,\"x\"]}") == 0;
    am2z_free(text);
    am2z_value_release(v);
    return ok ? 0 : 1;
}
