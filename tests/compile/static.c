/* AM2Z_STATIC build: every function is static, so an unused-function warning would
   fail this -Werror build; the program uses a little of each header. */
#define AM2Z_STATIC
#define AM2Z_RESP_IMPLEMENTATION
#include "../../am2z_resp.h"

int main(void) {
    am2z_value *v = am2z_value_set(am2z_value_object(), "n", am2z_value_int(3));
    int ok = am2z_value_get_int(v, "n", 0) == 3;
    am2z_value_release(v);
    return ok ? 0 : 1;
}
