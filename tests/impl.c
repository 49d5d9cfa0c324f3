/* The one translation unit that compiles the implementation (both headers) for the tests. */
#define AM2Z_RESP_IMPLEMENTATION
#include "../am2z_resp.h"
