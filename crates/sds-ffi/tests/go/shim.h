// C side of the Go consumer of libsds: trampolines that turn libsds's callbacks into calls of
// the exported Go functions, with the user data carried as an integer key (never a Go pointer).
#ifndef SDS_GO_SHIM_H
#define SDS_GO_SHIM_H

#include <stddef.h>
#include <stdint.h>

#include "libsds.h"

void* shim_new(const char* config, int with_config, uintptr_t call);
void shim_set_event_callback(void* ctx, uintptr_t manager);
int shim_wrap(void* ctx, void* msg, size_t len, const char* id, const char* channel, uintptr_t call);
int shim_unwrap(void* ctx, void* msg, size_t len, uintptr_t call);
int shim_start_periodic_tasks(void* ctx, uintptr_t call);
int shim_reset(void* ctx, uintptr_t call);
int shim_cleanup(void* ctx, uintptr_t call);
// 1 when the byte after a buffer of len bytes is the terminating NUL.
int shim_nul_terminated(const char* msg, size_t len);

#endif
