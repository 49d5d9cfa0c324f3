/* Two-translation-unit link test: this file holds the implementation, tu_b.c only the
   declarations; linking proves no definition is duplicated or missing. */
#define AM2Z_RESP_IMPLEMENTATION
#include "../../am2z_resp.h"
