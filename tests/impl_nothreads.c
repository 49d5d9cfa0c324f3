/* The implementation of am2z.h alone, for the AM2Z_NO_THREADS build of the tests
   (tests/run.sh compiles it with -DAM2Z_NO_THREADS and without -pthread; am2z_resp.h
   needs threads). */
#define AM2Z_IMPLEMENTATION
#include "../am2z.h"
