/* AM2Z_NO_THREADS with am2z_resp.h: must stop at its #error saying the queue runtime
   needs threads (tests/run.sh checks the message). */
#define AM2Z_NO_THREADS
#include "../../am2z_resp.h"
int main(void) { return 0; }
