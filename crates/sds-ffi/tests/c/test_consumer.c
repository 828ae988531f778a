// Uses libsds the way its real consumers do (the Go bindings of nim-sds among them): the result
// callback only stores the pointer and the length and signals; another thread reads the buffer
// after the callback has returned, with heap churn in between. Checks byte equality with a copy
// taken inside the callback, NUL termination, readable empty results, that an unwrap's
// message_ready event arrives before its result, that every call with a callback calls it, and
// that contract violations are refused without aborting.
// Usage: test_consumer [ROUNDS]  (default 300), or test_consumer soak OPERATIONS: wraps and
// unwraps (bob acknowledging alice every 10 messages) and checks that the resident set does not
// grow between 40 % of the run (every bounded structure full by then for runs of 100,000
// operations or more) and its end. Prints "N passed, M failed".

#include <pthread.h>
#include <stdint.h>
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

// ---- a result slot that keeps only the pointer, as the Go bindings do ----------------------

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
    int ret;
    const char* msg;  // libsds's buffer, read after the callback returned
    size_t len;
    char* witness;    // a copy taken inside the callback
    unsigned long seq;  // when the result arrived, on the common event/result clock
} Slot;

static pthread_mutex_t clock_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long tick = 0;
static unsigned long next_tick(void) {
    pthread_mutex_lock(&clock_lock);
    unsigned long t = ++tick;
    pthread_mutex_unlock(&clock_lock);
    return t;
}

static void slot_init(Slot* s) {
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    s->done = 0;
    s->msg = NULL;
    s->witness = NULL;
}

static void on_result(int ret, const char* msg, size_t len, void* ud) {
    Slot* s = (Slot*)ud;
    pthread_mutex_lock(&s->lock);
    free(s->witness);
    s->witness = malloc(len + 1);
    if (msg != NULL && len > 0) memcpy(s->witness, msg, len);
    s->witness[len] = 0;
    s->msg = msg;
    s->len = len;
    s->ret = ret;
    s->seq = next_tick();
    s->done = 1;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

// Waits (10 s at most); returns the code, or -1 on timeout.
static int wait_slot(Slot* s) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    pthread_mutex_lock(&s->lock);
    while (!s->done) {
        if (pthread_cond_timedwait(&s->cond, &s->lock, &deadline) != 0) break;
    }
    int ret = s->done ? s->ret : -1;
    s->done = 0;
    pthread_mutex_unlock(&s->lock);
    return ret;
}

// What freed memory would be reused for: allocations of the sizes just released, written over.
static void churn(size_t size) {
    void* blocks[16];
    for (int i = 0; i < 16; i++) {
        size_t n = size / (size_t)(1 + i % 4) + 16;
        blocks[i] = malloc(n);
        memset(blocks[i], 'Z', n);
    }
    for (int i = 0; i < 16; i++) free(blocks[i]);
    for (int i = 0; i < 16; i++) {
        blocks[i] = malloc(size + 1);
        memset(blocks[i], 'Y', size + 1);
    }
    for (int i = 0; i < 16; i++) free(blocks[i]);
}

// Checks the buffer of a finished call as a consumer reads it: after the callback returned and
// after heap churn. Returns 1 when it is intact.
static int intact(Slot* s) {
    churn(s->len);
    if (s->msg == NULL) return 0;
    if (s->msg[s->len] != 0) return 0;              // NUL-terminated
    if (strlen(s->msg) != s->len) return 0;         // usable with strlen / %s
    return memcmp(s->msg, s->witness, s->len) == 0;  // the bytes the callback saw
}

// ---- events: message_ready times by message index ------------------------------------------

#define MAX_ROUNDS 2000
static unsigned long ready_at[MAX_ROUNDS];
static int ready_count[MAX_ROUNDS];

static void on_event(int ret, const char* msg, size_t len, void* ud) {
    (void)ret;
    (void)ud;
    (void)len;
    const char* ready = strstr(msg, "\"eventType\":\"message_ready\"");
    const char* id = strstr(msg, "\"messageId\":\"c-");
    if (ready != NULL && id != NULL) {
        int i = atoi(id + strlen("\"messageId\":\"c-"));
        if (i >= 0 && i < MAX_ROUNDS) {
            ready_at[i] = next_tick();
            ready_count[i]++;
        }
    }
}

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

// Resident set size in KiB.
static long rss_kib(void) {
    long pages = 0, resident = 0;
    FILE* f = fopen("/proc/self/statm", "r");
    if (f == NULL) return -1;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = -1;
    fclose(f);
    return resident < 0 ? -1 : resident * (sysconf(_SC_PAGESIZE) / 1024);
}

// Wraps on `from`, unwraps on `to`; returns 1 when both succeed.
static int send_one(void* from, void* to, const char* id, Slot* s) {
    char content[600];
    memset(content, 'q', sizeof content);
    if (SdsWrapOutgoingMessage(from, content, sizeof content, id, "soak", on_result, s) != RET_OK) return 0;
    if (wait_slot(s) != RET_OK) return 0;
    size_t wire_len;
    unsigned char* wire = parse_bytes(s->msg, &wire_len);
    int ok = SdsUnwrapReceivedMessage(to, wire, wire_len, on_result, s) == RET_OK && wait_slot(s) == RET_OK;
    free(wire);
    return ok;
}

static int soak(long operations) {
    Slot s;
    slot_init(&s);
    void* alice = SdsNewReliabilityManagerWithConfig("{\"participantId\":\"alice\"}", on_result, &s);
    CHECK(alice != NULL && wait_slot(&s) == RET_OK, "alice created");
    void* bob = SdsNewReliabilityManagerWithConfig("{\"participantId\":\"bob\"}", on_result, &s);
    CHECK(bob != NULL && wait_slot(&s) == RET_OK, "bob created");
    SdsSetEventCallback(alice, on_event, NULL);
    SdsSetEventCallback(bob, on_event, NULL);
    long rounds = operations / 2, ok = 0, early = 0;
    char id[48];
    for (long i = 0; i < rounds; i++) {
        snprintf(id, sizeof id, "a-%ld", i);
        ok += send_one(alice, bob, id, &s);
        if (i % 10 == 9) {
            snprintf(id, sizeof id, "b-%ld", i);
            send_one(bob, alice, id, &s);
        }
        if (i == rounds * 4 / 10) early = rss_kib();
    }
    long late = rss_kib();
    printf("soak: %ld operations, RSS %ld KiB at 40 %%, %ld KiB at the end\n", rounds * 2, early, late);
    CHECK(ok == rounds, "every soak message wrapped and unwrapped");
    CHECK(early > 0 && late - early < 8 * 1024, "no growth of the resident set (8 MiB of slack)");
    SdsCleanupReliabilityManager(alice, on_result, &s);
    wait_slot(&s);
    SdsCleanupReliabilityManager(bob, on_result, &s);
    wait_slot(&s);
    free(s.witness);
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}

int main(int argc, char** argv) {
    if (argc > 2 && strcmp(argv[1], "soak") == 0) return soak(atol(argv[2]));
    int rounds = argc > 1 ? atoi(argv[1]) : 300;
    if (rounds < 1 || rounds > MAX_ROUNDS) rounds = 300;
    Slot s;
    slot_init(&s);

    void* alice = SdsNewReliabilityManagerWithConfig("{\"participantId\":\"alice\"}", on_result, &s);
    CHECK(alice != NULL && wait_slot(&s) == RET_OK, "alice created");
    CHECK(intact(&s) && s.len == 0, "creation result is a readable empty string");
    void* bob = SdsNewReliabilityManagerWithConfig("{\"participantId\":\"bob\"}", on_result, &s);
    CHECK(bob != NULL && wait_slot(&s) == RET_OK, "bob created");
    SdsSetEventCallback(bob, on_event, NULL);

    // Hundreds of real messages (each ~19 KB on the wire with its bloom filter), content of a
    // few kilobytes, every result read after its callback returned.
    int wrap_ok = 0, unwrap_ok = 0, ordered = 0, delivered_kind = 0;
    const char* first_wrap = NULL;
    char* first_witness = NULL;
    size_t first_len = 0;
    for (int i = 0; i < rounds; i++) {
        size_t content_len = 1000 + (size_t)(i * 37) % 4000;
        char* content = malloc(content_len);
        for (size_t k = 0; k < content_len; k++) content[k] = (char)('a' + (i + k) % 26);
        char id[32];
        snprintf(id, sizeof id, "c-%d", i);

        int code = SdsWrapOutgoingMessage(alice, content, content_len, id, "chat", on_result, &s);
        int ret = wait_slot(&s);
        if (code != RET_OK || ret != RET_OK || !intact(&s)) {
            CHECK(0, "wrap result intact after the callback returned");
            free(content);
            continue;
        }
        wrap_ok++;
        if (i == 0) {
            first_wrap = s.msg;
            first_len = s.len;
            first_witness = strdup(s.witness);
        }
        size_t wire_len;
        unsigned char* wire = parse_bytes(s.msg, &wire_len);

        code = SdsUnwrapReceivedMessage(bob, wire, wire_len, on_result, &s);
        ret = wait_slot(&s);
        if (code == RET_OK && ret == RET_OK && intact(&s)) {
            unwrap_ok++;
            // The content comes back as a number array: check its first and last bytes.
            char expect[64];
            snprintf(expect, sizeof expect, "\"message\":[%d,", (unsigned char)content[0]);
            if (strstr(s.msg, expect) != NULL && strstr(s.msg, "\"kind\":\"delivered\"") != NULL)
                delivered_kind++;
            if (ready_count[i] == 1 && ready_at[i] != 0 && ready_at[i] < s.seq) ordered++;
        } else {
            CHECK(0, "unwrap result intact after the callback returned");
        }
        free(wire);
        free(content);
        // A buffer stays valid for the next results: the first wrap's, a few results later.
        if (i == 8) {
            churn(first_len);
            CHECK(memcmp(first_wrap, first_witness, first_len) == 0 && first_wrap[first_len] == 0,
                  "a result buffer still valid after 16 more results");
        }
    }
    CHECK(wrap_ok == rounds, "every wrap result intact and NUL-terminated after the callback");
    CHECK(unwrap_ok == rounds, "every unwrap result intact and NUL-terminated after the callback");
    CHECK(delivered_kind == rounds, "unwrap results carry the content and kind delivered");
    CHECK(ordered == rounds, "each unwrap's message_ready arrives before its result");
    if (ordered != rounds) fprintf(stderr, "  message_ready first for %d of %d unwraps\n", ordered, rounds);
    free(first_witness);

    // A second copy: kind duplicate.
    {
        int code = SdsWrapOutgoingMessage(alice, "dup", 3, "dup-1", "chat", on_result, &s);
        CHECK(code == RET_OK && wait_slot(&s) == RET_OK, "wrap dup-1");
        size_t wire_len;
        unsigned char* wire = parse_bytes(s.msg, &wire_len);
        SdsUnwrapReceivedMessage(bob, wire, wire_len, on_result, &s);
        CHECK(wait_slot(&s) == RET_OK && strstr(s.msg, "\"kind\":\"delivered\"") != NULL, "first copy delivered");
        SdsUnwrapReceivedMessage(bob, wire, wire_len, on_result, &s);
        CHECK(wait_slot(&s) == RET_OK && intact(&s) && strstr(s.msg, "\"kind\":\"duplicate\"") != NULL,
              "second copy: kind duplicate");
        free(wire);
    }

    // Empty results are readable "" (not a dangling pointer).
    char* ids[] = {"c-0"};
    CHECK(SdsMarkDependenciesMet(bob, ids, 1, "chat", on_result, &s) == RET_OK, "mark accepted");
    CHECK(wait_slot(&s) == RET_OK && intact(&s) && s.len == 0, "mark result: readable empty string");
    CHECK(SdsStartPeriodicTasks(bob, on_result, &s) == RET_OK, "start accepted");
    CHECK(wait_slot(&s) == RET_OK && intact(&s) && s.len == 0, "start result: readable empty string");

    // Contract violations: the callback is called with RET_ERR, nothing aborts.
    CHECK(SdsMarkDependenciesMet(bob, ids, SIZE_MAX / 4, "chat", on_result, &s) == RET_ERR, "count SIZE_MAX/4 refused");
    CHECK(wait_slot(&s) == RET_ERR && intact(&s), "count SIZE_MAX/4 reported through the callback");
    CHECK(SdsMarkDependenciesMet(bob, ids, (size_t)1 << 40, "chat", on_result, &s) == RET_ERR, "count 2^40 refused");
    CHECK(wait_slot(&s) == RET_ERR, "count 2^40 reported through the callback");
    CHECK(SdsUnwrapReceivedMessage(bob, "x", SIZE_MAX, on_result, &s) == RET_ERR, "length SIZE_MAX refused");
    CHECK(wait_slot(&s) == RET_ERR && strstr(s.msg, "reMessageTooLarge") != NULL, "length SIZE_MAX reported");
    CHECK(SdsUnwrapReceivedMessage(bob, "x", (size_t)1 << 62, on_result, &s) == RET_ERR, "length 2^62 refused");
    CHECK(wait_slot(&s) == RET_ERR, "length 2^62 reported through the callback");
    CHECK(SdsWrapOutgoingMessage(bob, "x", (size_t)1 << 62, "big", "chat", on_result, &s) == RET_ERR, "content 2^62 refused");
    CHECK(wait_slot(&s) == RET_ERR, "content 2^62 reported through the callback");
    CHECK(SdsWrapOutgoingMessage((void*)0x1234, "x", 1, "id", "chat", on_result, &s) == RET_ERR, "unknown context refused");
    CHECK(wait_slot(&s) == RET_ERR && intact(&s) && strstr(s.msg, "libsds error: ") == s.msg, "unknown context reported");

    // One "libsds error: " prefix, not two.
    void* none = SdsNewReliabilityManagerWithConfig("{\"maxMessageHistory\":0}", on_result, &s);
    CHECK(none == NULL && wait_slot(&s) == RET_ERR, "invalid setting refused");
    CHECK(intact(&s) && strstr(s.msg, "libsds error: libsds error") == NULL, "the error text is not doubled");
    // A bloom filter that cannot be built is refused when the context is created.
    none = SdsNewReliabilityManagerWithConfig("{\"bloomCapacity\":9223372036854775807}", on_result, &s);
    CHECK(none == NULL && wait_slot(&s) == RET_ERR, "bloomCapacity i64::MAX refused at creation");

    CHECK(SdsCleanupReliabilityManager(alice, on_result, &s) == RET_OK, "cleanup alice");
    CHECK(wait_slot(&s) == RET_OK && intact(&s), "cleanup result readable");
    CHECK(SdsCleanupReliabilityManager(bob, on_result, &s) == RET_OK, "cleanup bob");
    wait_slot(&s);
    free(s.witness);
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
