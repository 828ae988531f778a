// libsds: Scalable Data Sync (SDS, SDS-R) for C and anything with a C FFI.
//
// Drop-in for nim-sds's libsds.h: the declarations up to the "Extensions" line are the same.
// Every call with a callback returns at once and calls that callback exactly once: with the
// result, on the context's worker thread (one per context, requests processed one at a time in
// order), or with RET_ERR and a "libsds error: ..." text when the call is refused (then on the
// calling thread, before the call returns RET_ERR). Inputs are copied before a function returns.
//
// Buffers given to callbacks: never NULL, always NUL-terminated (len excludes the NUL; an empty
// result is ""), and still valid after the callback returned: a result buffer until 64 more
// results of the same context have been delivered, an event or transmit buffer until 64 more
// events of the same context, and in any case until SdsCleanupReliabilityManager returns. The
// ring holds at most 64 buffers of each kind per context.
//
// Order: every event an operation produces (message_ready, message_sent, missing_dependencies,
// ...) reaches the event callback before that operation's result callback is called;
// SdsStartPeriodicTasks delivers its first periodic_sync before its result.
//
// Limits: a message or content longer than the context's maximum message size (1.25 MiB by
// default) is refused with reMessageTooLarge before it is read; SdsMarkDependenciesMet takes at
// most 1,048,576 ids per call.

#ifndef __libsds__
#define __libsds__

#include <stddef.h>
#include <stdint.h>

#define RET_OK                0
#define RET_ERR               1
#define RET_MISSING_CALLBACK  2

#ifdef __cplusplus
extern "C" {
#endif

typedef void (*SdsCallBack) (int callerRet, const char* msg, size_t len, void* userData);

// Supplies the retrieval hint of one of our messages: store a buffer allocated with malloc() in
// *hint and its length in *hintLen (libsds releases it with free()); leave *hint NULL for none.
typedef void (*SdsRetrievalHintProvider) (const char* messageId, char** hint, size_t* hintLen, void* userData);

void* SdsNewReliabilityManager(SdsCallBack callback, void* userData);

void SdsSetEventCallback(void* ctx, SdsCallBack callback, void* userData);

void SdsSetRetrievalHintProvider(void* ctx, SdsRetrievalHintProvider callback, void* userData);

// Stops the context (waiting for its worker, unless called from one of its own callbacks),
// frees it, then calls callback(RET_OK) on the calling thread; the context is invalid afterwards.
int SdsCleanupReliabilityManager(void* ctx, SdsCallBack callback, void* userData);

int SdsResetReliabilityManager(void* ctx, SdsCallBack callback, void* userData);

int SdsWrapOutgoingMessage(void* ctx, void* message, size_t messageLen, const char* messageId, const char* channelId, SdsCallBack callback, void* userData);

int SdsUnwrapReceivedMessage(void* ctx, void* message, size_t messageLen, SdsCallBack callback, void* userData);

int SdsMarkDependenciesMet(void* ctx, char** messageIDs, size_t count, const char* channelId, SdsCallBack callback, void* userData);

int SdsStartPeriodicTasks(void* ctx, SdsCallBack callback, void* userData);

// ---- Extensions (sds-rs) ----

// Like SdsNewReliabilityManager, configured by a JSON object (NULL or "{}" for the defaults):
//   "participantId": string (without it SDS-R is off, as in the classic constructor),
//   "databasePath": string (SQLite file: state survives restarts; message bytes go to the
//     directory "<databasePath>-messages" beside it; one process at a time per database,
//     contexts of one process opening the same path share it),
//   "databaseDurability": "normal" (default: survives crashes of the process; the newest
//     operations may be lost on power loss) or "full" (an fsync per operation),
//   "databaseKey": string of hexadecimal digits, at least 32 (16 bytes; use 32 random bytes
//     from the platform's key store): the database is kept encrypted with this key (a new one
//     is created encrypted; an existing one opens only with its own key, else NULL and
//     RET_ERR "rePersistenceError: ... key ..."). Needs libsds built with the feature
//     "encryption" (it then links OpenSSL's libcrypto); without it such a configuration is
//     refused,
//   and any engine setting by its camelCase name, for example "bloomCapacity",
//   "maxMessageHistory", "maxCausalHistory", "resendIntervalMs", "maxResendAttempts",
//   "possibleAckThreshold", "syncIntervalMs", "lostDependencyTimeoutMs" (0: never),
//   "maxClockLeadMs", "repairTMinMs", "repairTMaxMs", "numResponseGroups", "maxRepairRequests",
//   "repairCooldownMs", "maxRepairBytes",
//   "quietSync" (bool), "filterResendAfterMs" (0: never), "lamportUnit" ("seconds", the
//   default, as nim-sds counts, or "milliseconds"),
//   and "maxHeldBytes": the most bytes held on behalf of remote members across all channels
//     (default 512 MiB; beyond it the channel holding the most drops its heaviest sender's
//     oldest waiting messages).
// An invalid configuration: NULL, and the callback gets RET_ERR with the reason.
void* SdsNewReliabilityManagerWithConfig(const char* configJson, SdsCallBack callback, void* userData);

// Receives the bytes libsds itself wants broadcast (resends, SDS-R repair rebroadcasts, sync
// messages): callerRet RET_OK, msg/len the raw wire bytes. A repair rebroadcast is also
// announced by the "repair_ready" event, as in nim-sds: broadcast it from one of the two only.
void SdsSetTransmitCallback(void* ctx, SdsCallBack callback, void* userData);

#ifdef __cplusplus
}
#endif

#endif /* __libsds__ */
