/* AM2Z_NO_THREADS leaves the local runtime out: a call to am2z_local_runtime_new must fail
   to compile with an error naming the reason (tests/run.sh checks the message). */
#define AM2Z_NO_THREADS
#define AM2Z_IMPLEMENTATION
#include "../../am2z.h"
int main(void) {
    am2z_runtime *rt = am2z_local_runtime_new(NULL, NULL);
    am2z_runtime_free(rt);
    return 0;
}
