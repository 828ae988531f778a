package sdsgo

import (
	"bytes"
	"fmt"
	"math/rand"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// newManager creates a context whose cleanup and violation check run when the test ends.
func newManager(t *testing.T, name string, config *string) *Manager {
	t.Helper()
	m, r, err := New(name, config)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if m == nil || r.Ret != RetOK {
		t.Fatalf("%s: creation failed: ret %d %q", name, r.Ret, r.Text)
	}
	t.Cleanup(func() {
		if !m.Closed() {
			p, _ := m.Cleanup()
			if _, err := p.Await(); err != nil {
				t.Errorf("%s: cleanup: %v", name, err)
			}
		}
	})
	return m
}

// checkViolations reports every broken callback rule seen during the test, when it ends.
func checkViolations(t *testing.T) {
	TakeViolations()
	t.Cleanup(func() {
		// Late or repeated callbacks would show up here.
		time.Sleep(50 * time.Millisecond)
		v := TakeViolations()
		for i, s := range v {
			if i == 20 {
				t.Errorf("... and %d more violations", len(v)-20)
				break
			}
			t.Errorf("contract violation: %s", s)
		}
	})
}

func mustOK(t *testing.T, what string, call func() (*Pending, int)) Result {
	t.Helper()
	p, ret := call()
	if ret != RetOK {
		t.Fatalf("%s: returned %d", what, ret)
	}
	r, err := p.Await()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if r.Ret != RetOK {
		t.Fatalf("%s: callback got ret %d: %q", what, r.Ret, r.Text)
	}
	return r
}

// runLagged makes n calls one after another, each after the previous one's callback was
// called, and reads each result only once `lag` later calls have had their callbacks: by then
// its callback has long returned and the context has handed out `lag` more result buffers.
func runLagged(t *testing.T, n, lag int, issue func(i int) (*Pending, int), check func(i int, r Result)) {
	t.Helper()
	ps := make([]*Pending, n)
	for i := 0; i < n+lag; i++ {
		if i < n {
			p, ret := issue(i)
			if ret != RetOK {
				t.Fatalf("call %d returned %d", i, ret)
			}
			if !p.Wait(CallTimeout) {
				t.Fatalf("call %d: no result callback within %v", i, CallTimeout)
			}
			ps[i] = p
		}
		if j := i - lag; j >= 0 {
			check(j, ps[j].Read())
		}
	}
}

// eventsOutsideOperations returns the events that did not arrive while one of m's operations
// was in flight (after the call, before its result callback). Valid when m's operations run one
// after another and m has no periodic work: every event then belongs to an operation.
func eventsOutsideOperations(m *Manager) []Event {
	ops := m.Operations()
	sort.Slice(ops, func(i, j int) bool { return ops[i].Issued < ops[j].Issued })
	var out []Event
	for _, e := range m.Events() {
		k := sort.Search(len(ops), func(i int) bool { return ops[i].Issued > e.Seq }) - 1
		if k < 0 || ops[k].Calls() == 0 || e.Seq > ops[k].CalledAt() {
			out = append(out, e)
		}
	}
	return out
}

func readyCounts(m *Manager) (map[string]int, map[string]uint64) {
	count, at := map[string]int{}, map[string]uint64{}
	for _, e := range m.Events() {
		if e.Type == "message_ready" {
			count[e.MessageID]++
			at[e.MessageID] = e.Seq
		}
	}
	return count, at
}

func content(rng *rand.Rand, min, max int) []byte {
	b := make([]byte, min+rng.Intn(max-min+1))
	rng.Read(b)
	return b
}

// A wraps 1,000 messages, B unwraps them shuffled; then B replies and A sees acknowledgements.
func TestTwoManagersExchangeThousandMessages(t *testing.T) {
	checkViolations(t)
	const n, lag, channel = 1000, 16, "chan-ab"
	a := newManager(t, "A", nil)
	b := newManager(t, "B", nil)
	rng := rand.New(rand.NewSource(20261129))

	ids := make([]string, n)
	contents := make([][]byte, n)
	wires := make([][]byte, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("a-%04d", i)
		contents[i] = content(rng, 300, 19*1024)
	}
	start := time.Now()
	runLagged(t, n, lag, func(i int) (*Pending, int) {
		return a.Wrap(contents[i], ids[i], channel)
	}, func(i int, r Result) {
		if r.Ret != RetOK {
			t.Fatalf("wrap %s: ret %d %q", ids[i], r.Ret, r.Text)
		}
		w, err := ParseWire(r.Text)
		if err != nil {
			t.Fatalf("wrap %s, read after its callback returned: %v", ids[i], err)
		}
		if len(w) <= len(contents[i]) {
			t.Fatalf("wrap %s: %d wire bytes for %d content bytes", ids[i], len(w), len(contents[i]))
		}
		wires[i] = w
	})

	t.Logf("A wrapped %d messages in %v", n, time.Since(start))
	start = time.Now()
	order := rng.Perm(n)
	kinds := map[string]int{}
	withMissing := 0
	delivered := map[string]Result{} // message id -> the result of the unwrap that delivered it
	runLagged(t, n, lag, func(i int) (*Pending, int) {
		return b.Unwrap(wires[order[i]])
	}, func(i int, r Result) {
		k := order[i]
		if r.Ret != RetOK {
			t.Fatalf("unwrap %s: ret %d %q", ids[k], r.Ret, r.Text)
		}
		u, err := ParseUnwrapped(r.Text)
		if err != nil {
			t.Fatalf("unwrap %s, read after its callback returned: %v", ids[k], err)
		}
		if u.MessageID != ids[k] || u.ChannelID != channel {
			t.Fatalf("unwrap %s: result names message %q on channel %q", ids[k], u.MessageID, u.ChannelID)
		}
		if !bytes.Equal(u.Message, contents[k]) {
			t.Fatalf("unwrap %s: %d content bytes differ from the %d A wrapped", ids[k], len(u.Message), len(contents[k]))
		}
		kinds[u.Kind]++
		if len(u.MissingDeps) > 0 {
			withMissing++
		}
		if u.Kind == "delivered" {
			delivered[ids[k]] = r
		} else if u.Kind != "buffered" {
			t.Fatalf("unwrap %s: kind %q, want delivered or buffered", ids[k], u.Kind)
		}
	})
	t.Logf("B unwrapped them in %v: %v, %d with missing dependencies", time.Since(start), kinds, withMissing)
	if kinds["delivered"] == 0 || kinds["buffered"] == 0 || withMissing == 0 {
		t.Errorf("a shuffled order should deliver some at once and buffer others with missing deps: %v, %d", kinds, withMissing)
	}

	count, readyAt := readyCounts(b)
	for _, id := range ids {
		if count[id] != 1 {
			t.Errorf("B got %d message_ready events for %s, want 1", count[id], id)
		}
	}
	if len(count) != n {
		t.Errorf("B got message_ready for %d distinct ids, want %d", len(count), n)
	}
	early := 0
	for id, r := range delivered {
		if at, ok := readyAt[id]; !ok || at < r.Issued || at > r.Seq {
			early++
			if early <= 5 {
				t.Errorf("message_ready for %s (seq %d) is not between its delivering unwrap's call (%d) and result (%d)", id, at, r.Issued, r.Seq)
			}
		}
	}
	if early > 0 {
		t.Errorf("%d of %d delivering unwraps did not get their message_ready before their result", early, len(delivered))
	}
	if kinds["buffered"] > 0 && len(b.Events()) == 0 {
		t.Errorf("no events at B")
	}
	if late := eventsOutsideOperations(b); len(late) > 0 {
		t.Errorf("%d of B's events arrived outside any operation (after their operation's result), first %.120q", len(late), late[0].Raw)
	}
	hasMissingEvent := false
	for _, e := range b.Events() {
		hasMissingEvent = hasMissingEvent || e.Type == "missing_dependencies"
	}
	if !hasMissingEvent {
		t.Errorf("B got no missing_dependencies event")
	}

	// A message B already has: a duplicate, no second delivery.
	r := mustOK(t, "unwrap duplicate", func() (*Pending, int) { return b.Unwrap(wires[order[0]]) })
	if u, err := ParseUnwrapped(r.Text); err != nil || u.Kind != "duplicate" {
		t.Errorf("unwrap of a message already received: %v, kind %q, want duplicate", err, u.Kind)
	}
	if c, _ := readyCounts(b); c[ids[order[0]]] != 1 {
		t.Errorf("a duplicate was delivered again")
	}

	// B replies; its messages acknowledge A's.
	const replies = 5
	for i := 0; i < replies; i++ {
		id := fmt.Sprintf("b-reply-%d", i)
		w, err := ParseWire(mustOK(t, "B wraps "+id, func() (*Pending, int) { return b.Wrap([]byte("reply "+id), id, channel) }).Text)
		if err != nil {
			t.Fatalf("B wraps %s: %v", id, err)
		}
		u, err := ParseUnwrapped(mustOK(t, "A unwraps "+id, func() (*Pending, int) { return a.Unwrap(w) }).Text)
		if err != nil || u.MessageID != id || string(u.Message) != "reply "+id {
			t.Fatalf("A unwraps %s: %v %q %q", id, err, u.MessageID, u.Message)
		}
	}
	acked := map[string]int{}
	own := map[string]bool{}
	for _, id := range ids {
		own[id] = true
	}
	for _, e := range a.Events() {
		if e.Type == "message_sent" {
			if !own[e.MessageID] {
				t.Errorf("message_sent for %q, not one of A's messages", e.MessageID)
			}
			acked[e.MessageID]++
		}
	}
	t.Logf("A got message_sent for %d of its %d messages", len(acked), n)
	if len(acked) == 0 {
		t.Errorf("A got no message_sent event after unwrapping B's replies")
	}
	if c, _ := readyCounts(a); len(c) != replies {
		t.Errorf("A got message_ready for %d replies, want %d", len(c), replies)
	}
	if late := eventsOutsideOperations(a); len(late) > 0 {
		t.Errorf("%d of A's events arrived outside any operation, first %.120q", len(late), late[0].Raw)
	}
	if a.Threads() != 1 || b.Threads() != 1 {
		t.Errorf("callbacks ran on %d (A) and %d (B) threads, want one worker each", a.Threads(), b.Threads())
	}
}

// 8 goroutines wrap on one context at once; every call gets exactly one, correct result.
func TestEightGoroutinesOnOneContext(t *testing.T) {
	checkViolations(t)
	const goroutines, each = 8, 50
	m := newManager(t, "hammered", nil)
	type sent struct {
		id, channel string
		content     []byte
		wire        []byte
		p           *Pending
	}
	out := make([][]sent, goroutines)
	var wg sync.WaitGroup
	errs := make(chan string, goroutines*each)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(g)))
			for i := 0; i < each; i++ {
				s := sent{id: fmt.Sprintf("g%d-%03d", g, i), channel: fmt.Sprintf("hammer-%d", (g+i)%3), content: content(rng, 16, 2048)}
				p, ret := m.Wrap(s.content, s.id, s.channel)
				s.p = p
				if ret != RetOK {
					errs <- fmt.Sprintf("%s returned %d", s.id, ret)
					continue
				}
				r, err := p.Await()
				if err != nil || r.Ret != RetOK {
					errs <- fmt.Sprintf("%s: %v ret %d %q", s.id, err, r.Ret, r.Text)
					continue
				}
				if s.wire, err = ParseWire(r.Text); err != nil {
					errs <- fmt.Sprintf("%s, read after its callback returned: %v", s.id, err)
					continue
				}
				out[g] = append(out[g], s)
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if t.Failed() {
		t.FailNow()
	}
	time.Sleep(50 * time.Millisecond)
	seenWire := map[string]bool{}
	for _, list := range out {
		for _, s := range list {
			if c := s.p.Calls(); c != 1 {
				t.Errorf("%s: result callback called %d times", s.id, c)
			}
			if seenWire[string(s.wire)] {
				t.Errorf("%s: the same wire bytes as another call", s.id)
			}
			seenWire[string(s.wire)] = true
		}
	}
	if m.Threads() != 1 {
		t.Errorf("callbacks ran on %d threads, want the one worker", m.Threads())
	}

	// Each result belongs to the call that asked for it: its bytes carry that call's id.
	r := newManager(t, "receiver", nil)
	for _, list := range out {
		for _, s := range list {
			u, err := ParseUnwrapped(mustOK(t, "unwrap "+s.id, func() (*Pending, int) { return r.Unwrap(s.wire) }).Text)
			if err != nil {
				t.Fatal(err)
			}
			if u.MessageID != s.id || u.ChannelID != s.channel || !bytes.Equal(u.Message, s.content) {
				t.Fatalf("the wrap result for %s on %s unwraps as %s on %s (%d bytes)", s.id, s.channel, u.MessageID, u.ChannelID, len(u.Message))
			}
		}
	}
	count, _ := readyCounts(r)
	if len(count) != goroutines*each {
		t.Errorf("receiver got message_ready for %d distinct ids, want %d", len(count), goroutines*each)
	}
	for id, c := range count {
		if c != 1 {
			t.Errorf("receiver got %d message_ready for %s", c, id)
		}
	}
}

func refused(t *testing.T, what string, call func() (*Pending, int)) {
	t.Helper()
	p, ret := call()
	if ret != RetErr {
		t.Errorf("%s after cleanup returned %d, want RET_ERR", what, ret)
	}
	r, err := p.Await()
	if err != nil {
		t.Errorf("%s after cleanup: %v", what, err)
		return
	}
	if r.Ret != RetErr || !strings.HasPrefix(r.Text, "libsds error: ") {
		t.Errorf("%s after cleanup: callback got ret %d %q, want RET_ERR \"libsds error: ...\"", what, r.Ret, r.Text)
	}
}

// Cleanup while periodic tasks fire every 10 ms and another goroutine wraps.
func TestCleanupWhilePeriodicTasksRun(t *testing.T) {
	checkViolations(t)
	config := `{"syncIntervalMs":10,"resendIntervalMs":20}`
	m := newManager(t, "periodic", &config)

	r := mustOK(t, "start periodic tasks", func() (*Pending, int) { return m.StartPeriodicTasks() })
	first := false
	for _, e := range m.Events() {
		first = first || (e.Type == "periodic_sync" && e.Seq > r.Issued && e.Seq < r.Seq)
	}
	if !first {
		t.Errorf("no periodic_sync event before the result of SdsStartPeriodicTasks")
	}

	var afterCleanup atomic.Bool
	stop := make(chan struct{})
	done := make(chan struct{})
	var wraps, okBefore, refusedAfter int
	var problems []string
	go func() {
		defer close(done)
		rng := rand.New(rand.NewSource(7))
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			late := afterCleanup.Load()
			p, ret := m.Wrap(content(rng, 100, 4000), fmt.Sprintf("p-%d", i), "periodic")
			wraps++
			res, err := p.Await()
			switch {
			case err != nil:
				problems = append(problems, fmt.Sprintf("wrap %d: %v", i, err))
			case late && (ret != RetErr || res.Ret != RetErr || !strings.HasPrefix(res.Text, "libsds error: ")):
				problems = append(problems, fmt.Sprintf("wrap %d after cleanup: returned %d, callback %d %q", i, ret, res.Ret, res.Text))
			case late:
				refusedAfter++
			case res.Ret == RetOK:
				if _, err := ParseWire(res.Text); err != nil {
					problems = append(problems, fmt.Sprintf("wrap %d: %v", i, err))
				}
				okBefore++
			case ret != RetErr && res.Ret == RetErr && !strings.HasPrefix(res.Text, "libsds error: "):
				problems = append(problems, fmt.Sprintf("wrap %d: refusal without the libsds error prefix: %q", i, res.Text))
			}
			if late && refusedAfter+len(problems) >= 20 {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()

	time.Sleep(200 * time.Millisecond)
	var syncs, transmits int
	for _, e := range m.Events() {
		switch e.Type {
		case "periodic_sync":
			syncs++
		case "transmit":
			transmits++
		}
	}
	p, ret := m.Cleanup()
	afterCleanup.Store(true)
	if ret != RetOK {
		t.Errorf("cleanup returned %d", ret)
	}
	if res, err := p.Await(); err != nil || res.Ret != RetOK {
		t.Errorf("cleanup callback: %v ret %d %q", err, res.Ret, res.Text)
	}
	eventsAtCleanup := len(m.Events())
	select {
	case <-done:
	case <-time.After(CallTimeout):
		t.Fatalf("the wrapping goroutine did not finish")
	}
	close(stop)
	t.Logf("in 200 ms: %d periodic_sync and %d transmit events; %d wraps: %d succeeded before cleanup, %d refused after",
		syncs, transmits, wraps, okBefore, refusedAfter)
	for _, s := range problems {
		t.Error(s)
	}
	if syncs < 3 {
		t.Errorf("only %d periodic_sync events in 200 ms at a 10 ms sync interval", syncs)
	}
	if okBefore == 0 || refusedAfter == 0 {
		t.Errorf("the wrapping goroutine should succeed before cleanup and be refused after: %d, %d", okBefore, refusedAfter)
	}
	if !p.Wait(0) || p.Calls() != 1 {
		t.Errorf("cleanup callback called %d times", p.Calls())
	}

	refused(t, "wrap", func() (*Pending, int) { return m.Wrap([]byte("x"), "late", "periodic") })
	refused(t, "unwrap", func() (*Pending, int) { return m.Unwrap([]byte{1, 2, 3}) })
	refused(t, "start periodic tasks", func() (*Pending, int) { return m.StartPeriodicTasks() })
	refused(t, "reset", func() (*Pending, int) { return m.Reset() })
	refused(t, "cleanup", func() (*Pending, int) { return m.Cleanup() })
	time.Sleep(50 * time.Millisecond)
	if n := len(m.Events()); n != eventsAtCleanup {
		t.Errorf("%d events after the cleanup callback", n-eventsAtCleanup)
	}
}

// An invalid configuration: NULL, and the callback gets RET_ERR with the reason.
func TestInvalidConfigurationIsRefusedThroughTheCallback(t *testing.T) {
	checkViolations(t)
	for _, config := range []string{`{"noSuchSetting":1}`, `{"syncIntervalMs":"soon"}`, `not json`} {
		m, r, err := New("invalid", &config)
		if err != nil {
			t.Fatalf("%s: %v", config, err)
		}
		if m != nil {
			t.Errorf("%s: got a context", config)
			p, _ := m.Cleanup()
			_, _ = p.Await()
		}
		if r.Ret != RetErr || !strings.HasPrefix(r.Text, "libsds error: ") {
			t.Errorf("%s: callback got ret %d %q, want RET_ERR \"libsds error: ...\"", config, r.Ret, r.Text)
		}
	}
}
