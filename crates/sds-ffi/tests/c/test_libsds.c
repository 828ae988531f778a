// Exercises every function of libsds.h from C: two contexts exchanging messages out of order,
// missing dependencies, marking them met, acknowledgements, a retrieval-hint provider, NULL
// arguments, state kept in a database across contexts, periodic work, reset and cleanup.
// Prints "N passed, M failed"; exits non-zero on any failure.

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "libsds.h"

static int passed = 0, failed = 0;
#define CHECK(cond, what)                                                     \
    do {                                                                      \
        if (cond) {                                                           \
            passed++;                                                         \
        } else {                                                              \
            failed++;                                                         \
            fprintf(stderr, "FAILED line %d: %s\n", __LINE__, what);          \
        }                                                                     \
    } while (0)

// ---- one result slot per call -------------------------------------------------------------

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
    int ret;
    char* msg;
    size_t len;
} Result;

static void result_init(Result* r) {
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    r->done = 0;
    r->msg = NULL;
    r->len = 0;
}

static void on_result(int ret, const char* msg, size_t len, void* ud) {
    Result* r = (Result*)ud;
    pthread_mutex_lock(&r->lock);
    free(r->msg);
    r->msg = malloc(len + 1);
    if (len > 0) memcpy(r->msg, msg, len);
    r->msg[len] = 0;
    r->len = len;
    r->ret = ret;
    r->done = 1;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

// Waits for the callback (5 s at most); returns its code, or -1 on timeout.
static int wait_result(Result* r) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 5;
    pthread_mutex_lock(&r->lock);
    while (!r->done) {
        if (pthread_cond_timedwait(&r->cond, &r->lock, &deadline) != 0) break;
    }
    int ret = r->done ? r->ret : -1;
    r->done = 0;
    pthread_mutex_unlock(&r->lock);
    return ret;
}

// ---- events -------------------------------------------------------------------------------

#define MAX_EVENTS 256
static pthread_mutex_t events_lock = PTHREAD_MUTEX_INITIALIZER;
static char* events[MAX_EVENTS];
static int event_count = 0;

static void on_event(int ret, const char* msg, size_t len, void* ud) {
    (void)ret;
    (void)ud;
    pthread_mutex_lock(&events_lock);
    if (event_count < MAX_EVENTS) {
        char* copy = malloc(len + 1);
        memcpy(copy, msg, len);
        copy[len] = 0;
        events[event_count++] = copy;
    }
    pthread_mutex_unlock(&events_lock);
}

// Waits up to 5 s for an event containing all of the given fragments.
static int saw_event(const char* a, const char* b) {
    for (int tries = 0; tries < 500; tries++) {
        pthread_mutex_lock(&events_lock);
        for (int i = 0; i < event_count; i++) {
            if (strstr(events[i], a) && (!b || strstr(events[i], b))) {
                pthread_mutex_unlock(&events_lock);
                return 1;
            }
        }
        pthread_mutex_unlock(&events_lock);
        usleep(10000);
    }
    return 0;
}

// ---- helpers ------------------------------------------------------------------------------

// Parses "10,2,109,…" into bytes.
static unsigned char* parse_bytes(const char* text, size_t* len) {
    size_t n = 1;
    for (const char* p = text; *p; p++) n += (*p == ',');
    unsigned char* out = malloc(n);
    *len = 0;
    const char* p = text;
    while (*p) {
        out[(*len)++] = (unsigned char)strtol(p, (char**)&p, 10);
        if (*p == ',') p++;
    }
    return out;
}

static void hint_provider(const char* message_id, char** hint, size_t* hint_len, void* ud) {
    (void)ud;
    size_t n = strlen(message_id) + 5;
    char* h = malloc(n + 1);
    snprintf(h, n + 1, "hint:%s", message_id);
    *hint = h;
    *hint_len = n;
}

static unsigned char* wrap(void* ctx, const char* content, const char* id, Result* r, size_t* len) {
    int code = SdsWrapOutgoingMessage(ctx, (void*)content, strlen(content), id, "chat", on_result, r);
    CHECK(code == RET_OK, "wrap accepted");
    CHECK(wait_result(r) == RET_OK, "wrap result");
    return parse_bytes(r->msg, len);
}

int main(void) {
    Result r;
    result_init(&r);

    // Construction.
    CHECK(SdsNewReliabilityManager(NULL, NULL) == NULL, "NULL callback gives no context");
    void* alice = SdsNewReliabilityManagerWithConfig("{\"participantId\":\"alice\"}", on_result, &r);
    CHECK(alice != NULL && wait_result(&r) == RET_OK, "alice created");
    void* bob = SdsNewReliabilityManagerWithConfig("{\"participantId\":\"bob\"}", on_result, &r);
    CHECK(bob != NULL && wait_result(&r) == RET_OK, "bob created");
    void* classic = SdsNewReliabilityManager(on_result, &r);
    CHECK(classic != NULL && wait_result(&r) == RET_OK, "classic context created");
    CHECK(SdsNewReliabilityManagerWithConfig("{\"bloomCapacity\":0}", on_result, &r) == NULL, "bad config refused");
    CHECK(wait_result(&r) == RET_ERR, "bad config reported");
    CHECK(SdsNewReliabilityManagerWithConfig("not json", on_result, &r) == NULL, "malformed config refused");
    CHECK(wait_result(&r) == RET_ERR, "malformed config reported");

    SdsSetEventCallback(alice, on_event, &r);
    SdsSetEventCallback(bob, on_event, NULL);  // events come with NULL user data too
    SdsSetEventCallback(classic, on_event, NULL);
    SdsSetRetrievalHintProvider(alice, hint_provider, NULL);

    // alice sends m1, m2; bob gets m2 first.
    size_t m1_len, m2_len;
    unsigned char* m1 = wrap(alice, "one", "m1", &r, &m1_len);
    unsigned char* m2 = wrap(alice, "two", "m2", &r, &m2_len);
    CHECK(m1_len > 18000, "wrapped message carries the bloom filter");

    CHECK(SdsUnwrapReceivedMessage(bob, m2, m2_len, on_result, &r) == RET_OK, "unwrap accepted");
    CHECK(wait_result(&r) == RET_OK, "unwrap result");
    CHECK(strstr(r.msg, "\"message\":[116,119,111]") != NULL, "content as a number array");
    CHECK(strstr(r.msg, "\"channelId\":\"chat\"") != NULL, "channel id");
    CHECK(strstr(r.msg, "\"messageId\":\"m1\"") != NULL, "m1 reported missing");
    // The hint alice's provider gave for m1: base64("hint:m1") = "aGludDptMQ==".
    CHECK(strstr(r.msg, "aGludDptMQ==") != NULL, "retrieval hint in base64");
    CHECK(saw_event("missing_dependencies", "\"m2\""), "missing_dependencies event");

    // Marking m1 met delivers m2.
    char* ids[] = {"m1"};
    CHECK(SdsMarkDependenciesMet(bob, ids, 1, "chat", on_result, &r) == RET_OK, "mark accepted");
    CHECK(wait_result(&r) == RET_OK && r.len == 0, "mark result");
    CHECK(saw_event("message_ready", "\"m2\""), "m2 delivered after mark");

    // m1 itself still arrives and is delivered.
    CHECK(SdsUnwrapReceivedMessage(bob, m1, m1_len, on_result, &r) == RET_OK, "unwrap m1");
    CHECK(wait_result(&r) == RET_OK, "unwrap m1 result");
    CHECK(saw_event("message_ready", "\"m1\""), "m1 delivered");

    // bob replies; alice learns both were received.
    size_t b1_len;
    unsigned char* b1 = wrap(bob, "ack", "b1", &r, &b1_len);
    CHECK(SdsUnwrapReceivedMessage(alice, b1, b1_len, on_result, &r) == RET_OK, "alice unwraps b1");
    CHECK(wait_result(&r) == RET_OK, "alice unwrap result");
    CHECK(saw_event("message_sent", "\"m1\""), "m1 acknowledged");
    CHECK(saw_event("message_sent", "\"m2\""), "m2 acknowledged");
    CHECK(saw_event("message_ready", "\"b1\""), "b1 delivered at alice");

    // The classic context (no participant id) sees m1's hint too.
    size_t m3_len;
    unsigned char* m3 = wrap(alice, "three", "m3", &r, &m3_len);
    CHECK(SdsUnwrapReceivedMessage(classic, m3, m3_len, on_result, &r) == RET_OK, "classic unwrap");
    CHECK(wait_result(&r) == RET_OK, "classic unwrap result");
    CHECK(strstr(r.msg, "aGludDptMQ==") != NULL, "hints cited for logged messages");

    // A context with a database: released and created again, it still holds what it sent.
    char dbdir[] = "/tmp/sds_c_db_XXXXXX";
    CHECK(mkdtemp(dbdir) != NULL, "temporary directory");
    char config[256];
    snprintf(config, sizeof config, "{\"participantId\":\"dora\",\"databasePath\":\"%s/dora.db\"}", dbdir);
    void* dora = SdsNewReliabilityManagerWithConfig(config, on_result, &r);
    CHECK(dora != NULL && wait_result(&r) == RET_OK, "dora created with a database");
    size_t d1_len;
    unsigned char* d1 = wrap(dora, "kept", "d1", &r, &d1_len);
    CHECK(SdsCleanupReliabilityManager(dora, on_result, &r) == RET_OK, "cleanup dora");
    CHECK(wait_result(&r) == RET_OK, "cleanup dora result");
    void* dora2 = SdsNewReliabilityManagerWithConfig(config, on_result, &r);
    CHECK(dora2 != NULL && wait_result(&r) == RET_OK, "dora reopened");
    CHECK(SdsWrapOutgoingMessage(dora2, "again", 5, "d1", "chat", on_result, &r) == RET_OK, "resend handed off");
    CHECK(wait_result(&r) == RET_ERR && strstr(r.msg, "already in use") != NULL, "d1 remembered across contexts");
    size_t d2_len;
    unsigned char* d2 = wrap(dora2, "next", "d2", &r, &d2_len);
    CHECK(SdsUnwrapReceivedMessage(bob, d2, d2_len, on_result, &r) == RET_OK, "bob unwraps d2");
    CHECK(wait_result(&r) == RET_OK && strstr(r.msg, "\"messageId\":\"d1\"") != NULL, "d2 cites d1 from the database");
    CHECK(SdsCleanupReliabilityManager(dora2, on_result, &r) == RET_OK, "cleanup dora again");
    wait_result(&r);
    // An encrypted database ("databaseKey"): a build without the feature "encryption" refuses
    // it clearly; a build with it keeps the message for the right key and refuses another.
    const char* key_hex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    char keyed[400];
    snprintf(keyed, sizeof keyed, "{\"participantId\":\"erin\",\"databasePath\":\"%s/erin.db\",\"databaseKey\":\"%s\"}", dbdir, key_hex);
    void* erin = SdsNewReliabilityManagerWithConfig(keyed, on_result, &r);
    int erin_ret = wait_result(&r);
    if (erin == NULL) {
        CHECK(erin_ret == RET_ERR && strstr(r.msg, "no encryption") != NULL, "databaseKey refused without encryption");
    } else {
        CHECK(erin_ret == RET_OK, "erin created with an encrypted database");
        size_t e1_len;
        unsigned char* e1 = wrap(erin, "secret", "e1", &r, &e1_len);
        free(e1);
        CHECK(SdsCleanupReliabilityManager(erin, on_result, &r) == RET_OK, "cleanup erin");
        wait_result(&r);
        char wrong[400];
        snprintf(wrong, sizeof wrong, "{\"participantId\":\"erin\",\"databasePath\":\"%s/erin.db\",\"databaseKey\":\"%s\"}", dbdir, "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
        void* thief = SdsNewReliabilityManagerWithConfig(wrong, on_result, &r);
        CHECK(thief == NULL && wait_result(&r) == RET_ERR && strstr(r.msg, "key is wrong") != NULL, "a wrong databaseKey refused");
        void* erin2 = SdsNewReliabilityManagerWithConfig(keyed, on_result, &r);
        CHECK(erin2 != NULL && wait_result(&r) == RET_OK, "erin reopened with her key");
        CHECK(SdsWrapOutgoingMessage(erin2, "again", 5, "e1", "chat", on_result, &r) == RET_OK, "erin resend handed off");
        CHECK(wait_result(&r) == RET_ERR && strstr(r.msg, "already in use") != NULL, "e1 kept in the encrypted database");
        CHECK(SdsCleanupReliabilityManager(erin2, on_result, &r) == RET_OK, "cleanup erin again");
        wait_result(&r);
    }
    char rm[300];
    snprintf(rm, sizeof rm, "rm -rf %s", dbdir);
    int rm_status = system(rm);
    (void)rm_status;

    // Errors: before hand-off and from the core.
    CHECK(SdsWrapOutgoingMessage(alice, "x", 1, "id", NULL, on_result, &r) == RET_ERR, "NULL channel refused");
    CHECK(wait_result(&r) == RET_ERR && strstr(r.msg, "libsds error") != NULL, "NULL channel reported");
    CHECK(SdsWrapOutgoingMessage(alice, "x", 1, "id", "", on_result, &r) == RET_ERR, "empty channel refused");
    wait_result(&r);
    CHECK(SdsWrapOutgoingMessage(alice, NULL, 5, "id", "chat", on_result, &r) == RET_ERR, "NULL message refused");
    wait_result(&r);
    CHECK(SdsWrapOutgoingMessage(alice, "x", 1, NULL, "chat", on_result, &r) == RET_ERR, "NULL id refused");
    wait_result(&r);
    CHECK(SdsWrapOutgoingMessage(alice, "x", 1, "id", "chat", NULL, NULL) == RET_MISSING_CALLBACK, "NULL callback");
    CHECK(SdsMarkDependenciesMet(alice, NULL, 2, "chat", on_result, &r) == RET_ERR, "NULL id array refused");
    wait_result(&r);
    CHECK(SdsUnwrapReceivedMessage(alice, NULL, 3, on_result, &r) == RET_ERR, "NULL bytes refused");
    wait_result(&r);
    CHECK(SdsWrapOutgoingMessage(alice, "", 0, "empty", "chat", on_result, &r) == RET_OK, "empty content handed off");
    CHECK(wait_result(&r) == RET_ERR && strstr(r.msg, "reInvalidArgument") != NULL, "empty content: reInvalidArgument");
    CHECK(SdsUnwrapReceivedMessage(alice, "\x0a", 1, on_result, &r) == RET_OK, "garbage handed off");
    CHECK(wait_result(&r) == RET_ERR && strstr(r.msg, "reDeserializationError") != NULL, "garbage: reDeserializationError");
    CHECK(SdsWrapOutgoingMessage(NULL, "x", 1, "id", "chat", on_result, &r) == RET_ERR, "NULL context refused");
    wait_result(&r);

    // Periodic work: periodic_sync at start, also when started twice.
    CHECK(SdsStartPeriodicTasks(alice, on_result, &r) == RET_OK, "start tasks");
    CHECK(wait_result(&r) == RET_OK, "start tasks result");
    CHECK(SdsStartPeriodicTasks(alice, on_result, &r) == RET_OK, "start tasks again");
    CHECK(wait_result(&r) == RET_OK, "start tasks again result");
    CHECK(saw_event("periodic_sync", NULL), "periodic_sync event");

    // Reset and cleanup.
    CHECK(SdsResetReliabilityManager(bob, on_result, &r) == RET_OK, "reset");
    CHECK(wait_result(&r) == RET_OK, "reset result");
    CHECK(SdsCleanupReliabilityManager(alice, on_result, &r) == RET_OK, "cleanup alice");
    CHECK(wait_result(&r) == RET_OK, "cleanup callback");
    CHECK(SdsWrapOutgoingMessage(alice, "x", 1, "id", "chat", on_result, &r) == RET_ERR, "released context refused");
    wait_result(&r);
    CHECK(SdsCleanupReliabilityManager(alice, on_result, &r) == RET_ERR, "double cleanup refused");
    wait_result(&r);
    SdsSetEventCallback(alice, on_event, NULL);  // released: ignored, no crash
    CHECK(SdsCleanupReliabilityManager(bob, on_result, &r) == RET_OK, "cleanup bob");
    wait_result(&r);
    CHECK(SdsCleanupReliabilityManager(classic, on_result, &r) == RET_OK, "cleanup classic");
    wait_result(&r);

    free(m1);
    free(m2);
    free(m3);
    free(b1);
    free(d1);
    free(d2);
    free(r.msg);
    for (int i = 0; i < event_count; i++) free(events[i]);
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
