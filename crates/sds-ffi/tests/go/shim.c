#include <sys/syscall.h>
#include <unistd.h>

#include "shim.h"
#include "_cgo_export.h"

static long thread_id(void) { return (long)syscall(SYS_gettid); }

// Result callbacks only hand the pointer and length over; Go reads the buffer later.
static void result_trampoline(int ret, const char* msg, size_t len, void* user_data) {
    sdsGoResult(ret, (char*)msg, len, (uintptr_t)user_data, thread_id());
}

static void event_trampoline(int ret, const char* msg, size_t len, void* user_data) {
    sdsGoEvent(ret, (char*)msg, len, (uintptr_t)user_data, thread_id());
}

void* shim_new(const char* config, int with_config, uintptr_t call) {
    if (with_config) {
        return SdsNewReliabilityManagerWithConfig(config, result_trampoline, (void*)call);
    }
    return SdsNewReliabilityManager(result_trampoline, (void*)call);
}

void shim_set_event_callback(void* ctx, uintptr_t manager) {
    SdsSetEventCallback(ctx, event_trampoline, (void*)manager);
}

int shim_wrap(void* ctx, void* msg, size_t len, const char* id, const char* channel, uintptr_t call) {
    return SdsWrapOutgoingMessage(ctx, msg, len, id, channel, result_trampoline, (void*)call);
}

int shim_unwrap(void* ctx, void* msg, size_t len, uintptr_t call) {
    return SdsUnwrapReceivedMessage(ctx, msg, len, result_trampoline, (void*)call);
}

int shim_start_periodic_tasks(void* ctx, uintptr_t call) {
    return SdsStartPeriodicTasks(ctx, result_trampoline, (void*)call);
}

int shim_reset(void* ctx, uintptr_t call) {
    return SdsResetReliabilityManager(ctx, result_trampoline, (void*)call);
}

int shim_cleanup(void* ctx, uintptr_t call) {
    return SdsCleanupReliabilityManager(ctx, result_trampoline, (void*)call);
}

int shim_nul_terminated(const char* msg, size_t len) { return msg != NULL && msg[len] == 0; }
