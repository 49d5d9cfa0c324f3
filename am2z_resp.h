/* am2z_resp.h - v0.1 - SHA-256, a RESP (Redis protocol) client and the distributed queue
   runtime for am2z.h. MIT licence at the end of am2z.h.

   Do this:
       #define AM2Z_RESP_IMPLEMENTATION
   before you include this file in ONE C or C++ file. It implies AM2Z_IMPLEMENTATION, so
   that file compiles the implementation of both headers.
*/
#if defined(AM2Z_RESP_IMPLEMENTATION) && !defined(AM2Z_IMPLEMENTATION)
#define AM2Z_IMPLEMENTATION
#endif
#include "am2z.h"

#ifndef AM2Z_RESP_H_INCLUDED
#define AM2Z_RESP_H_INCLUDED
#endif /* AM2Z_RESP_H_INCLUDED */
