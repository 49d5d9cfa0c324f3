/* A system header before the implementation under a strict -std=c99: must fail to compile
   with am2z.h's #error naming the fix (tests/run.sh checks the message), not with a page
   of implicit declarations. */
#include <stdio.h>
#define AM2Z_IMPLEMENTATION
#include "../../am2z.h"
int main(void) { return 0; }
