// Package sdsgo is a small cgo binding of libsds, written the way Go consumers of libsds are:
// a result callback only keeps the buffer's pointer and length and wakes the caller, which reads
// the buffer after the callback has returned; one context per manager; every context's events go
// through one exported Go function that finds the manager by the callback's user data.
//
// Whatever breaks libsds's callback contract (an unknown user data, a second call of a result
// callback, a NULL or unterminated buffer, an event that is not JSON, an event after cleanup) is
// recorded as a violation for the tests to report.
package sdsgo

/*
#cgo CFLAGS: -I${SRCDIR}/../../include
#cgo LDFLAGS: -lsds
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// The return codes of libsds.h.
const (
	RetOK              = 0
	RetErr             = 1
	RetMissingCallback = 2
)

// CallTimeout bounds the wait for any callback.
const CallTimeout = 30 * time.Second

// seq orders everything observed: calls issued, events and results.
var seq atomic.Uint64

func next() uint64 { return seq.Add(1) }

var (
	violationsMu sync.Mutex
	violations   []string
)

func violate(format string, args ...any) {
	violationsMu.Lock()
	violations = append(violations, fmt.Sprintf(format, args...))
	violationsMu.Unlock()
}

// TakeViolations returns the contract violations seen since the last call and forgets them.
func TakeViolations() []string {
	violationsMu.Lock()
	defer violationsMu.Unlock()
	v := violations
	violations = nil
	return v
}

// Pending is one call's result callback.
type Pending struct {
	key     uintptr
	manager *Manager
	// Issued: when the call was made (on the sequence shared with events and results).
	Issued uint64
	done   chan struct{}
	calls  atomic.Int32
	// Written by the callback before done is closed; read after it is closed.
	ret C.int
	msg *C.char
	n   C.size_t
	seq uint64
	tid int64
}

var (
	pendingMu sync.Mutex
	pendings  = map[uintptr]*Pending{}
	nextKey   atomic.Uintptr
)

// newPending registers a call; results of manager's own operations (run on its worker) pass
// the manager, creation, cleanup and refusals (run on the caller's thread) nil.
func newPending(m *Manager) *Pending {
	p := &Pending{key: nextKey.Add(1), manager: m, done: make(chan struct{})}
	pendingMu.Lock()
	pendings[p.key] = p
	pendingMu.Unlock()
	if m != nil {
		m.mu.Lock()
		m.ops = append(m.ops, p)
		m.mu.Unlock()
	}
	p.Issued = next()
	return p
}

//export sdsGoResult
func sdsGoResult(ret C.int, msg *C.char, n C.size_t, key C.uintptr_t, tid C.long) {
	pendingMu.Lock()
	p := pendings[uintptr(key)]
	pendingMu.Unlock()
	if p == nil {
		violate("result callback with unknown user data %d", uintptr(key))
		return
	}
	if p.calls.Add(1) != 1 {
		violate("result callback of call %d called again (ret %d)", p.key, int(ret))
		return
	}
	// Only the pointer and the length: the caller reads the buffer once this has returned.
	p.ret, p.msg, p.n, p.seq, p.tid = ret, msg, n, next(), int64(tid)
	close(p.done)
}

// badPointer says what is wrong with a buffer pointer that cannot be read at all (NULL, or a
// dangling placeholder such as an empty Rust Vec's), or "".
func badPointer(msg *C.char) string {
	if msg == nil {
		return "is NULL"
	}
	if a := uintptr(unsafe.Pointer(msg)); a < 4096 {
		return fmt.Sprintf("is not a readable address (%#x)", a)
	}
	return ""
}

// Result is what a result callback reported, read after it returned.
type Result struct {
	Ret    int
	Text   string
	Issued uint64 // when the call was made
	Seq    uint64 // when the callback ran
	Thread int64  // the OS thread the callback ran on
}

// Calls says how often the result callback has been called so far.
func (p *Pending) Calls() int { return int(p.calls.Load()) }

// CalledAt is when the callback ran (on the sequence shared with events); the callback must
// have been called (Wait). It does not read the buffer.
func (p *Pending) CalledAt() uint64 {
	<-p.done
	return p.seq
}

// Wait waits for the callback; false after timeout.
func (p *Pending) Wait(timeout time.Duration) bool {
	// Done already wins: a select with both cases ready would pick one at random.
	select {
	case <-p.done:
		return true
	default:
	}
	select {
	case <-p.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// Read reads the result buffer now; the callback must have been called (Wait).
func (p *Pending) Read() Result {
	<-p.done
	r := Result{Ret: int(p.ret), Issued: p.Issued, Seq: p.seq, Thread: p.tid}
	if bad := badPointer(p.msg); bad != "" {
		violate("call %d: the result buffer %s", p.key, bad)
	} else {
		r.Text = C.GoStringN(p.msg, C.int(p.n))
		if C.shim_nul_terminated(p.msg, p.n) == 0 {
			violate("call %d: the result buffer is not NUL-terminated", p.key)
		}
	}
	if p.manager != nil && r.Ret == RetOK {
		p.manager.noteThread(r.Thread)
	}
	return r
}

// Await waits for the callback, then reads its buffer.
func (p *Pending) Await() (Result, error) {
	if !p.Wait(CallTimeout) {
		return Result{}, fmt.Errorf("call %d: no result callback within %v", p.key, CallTimeout)
	}
	return p.Read(), nil
}

// Event is one event callback's JSON, with the fields the tests use.
type Event struct {
	Seq       uint64
	Type      string
	MessageID string
	ChannelID string
	Raw       string
}

// Manager is one libsds context.
type Manager struct {
	Name   string
	ctx    unsafe.Pointer
	key    uintptr
	closed atomic.Bool

	mu      sync.Mutex
	events  []Event
	threads map[int64]bool
	ops     []*Pending
}

var managers sync.Map // event user data -> *Manager

//export sdsGoEvent
func sdsGoEvent(ret C.int, msg *C.char, n C.size_t, key C.uintptr_t, tid C.long) {
	s := next()
	v, ok := managers.Load(uintptr(key))
	if !ok {
		violate("event callback with unknown user data %d", uintptr(key))
		return
	}
	m := v.(*Manager)
	if m.closed.Load() {
		violate("%s: event after the cleanup callback", m.Name)
	}
	if bad := badPointer(msg); bad != "" {
		violate("%s: the event buffer %s", m.Name, bad)
		return
	}
	raw := C.GoStringN(msg, C.int(n))
	if C.shim_nul_terminated(msg, n) == 0 {
		violate("%s: event buffer is not NUL-terminated", m.Name)
	}
	var head struct {
		EventType string `json:"eventType"`
		MessageID string `json:"messageId"`
		ChannelID string `json:"channelId"`
	}
	if err := json.Unmarshal([]byte(raw), &head); err != nil || head.EventType == "" {
		violate("%s: event is not a JSON object with an eventType (ret %d): %.120q", m.Name, int(ret), raw)
	}
	m.mu.Lock()
	m.events = append(m.events, Event{Seq: s, Type: head.EventType, MessageID: head.MessageID, ChannelID: head.ChannelID, Raw: raw})
	m.threads[int64(tid)] = true
	m.mu.Unlock()
}

// New creates a context with SdsNewReliabilityManager, or with
// SdsNewReliabilityManagerWithConfig when config is not nil. It returns the creation callback's
// result; the manager is nil when libsds returned NULL.
func New(name string, config *string) (*Manager, Result, error) {
	p := newPending(nil)
	var ctx unsafe.Pointer
	if config == nil {
		ctx = C.shim_new(nil, 0, C.uintptr_t(p.key))
	} else {
		text := C.CString(*config)
		ctx = C.shim_new(text, 1, C.uintptr_t(p.key))
		C.free(unsafe.Pointer(text))
	}
	var m *Manager
	if ctx != nil {
		m = &Manager{Name: name, ctx: ctx, key: nextKey.Add(1), threads: map[int64]bool{}}
		managers.Store(m.key, m)
		C.shim_set_event_callback(ctx, C.uintptr_t(m.key))
	}
	r, err := p.Await()
	return m, r, err
}

func bytesArg(b []byte) (unsafe.Pointer, C.size_t) {
	if len(b) == 0 {
		return nil, 0
	}
	// libsds copies the input before it returns.
	return unsafe.Pointer(&b[0]), C.size_t(len(b))
}

// Wrap calls SdsWrapOutgoingMessage; the int is what it returned.
func (m *Manager) Wrap(content []byte, id, channel string) (*Pending, int) {
	p := newPending(m)
	cid, cch := C.CString(id), C.CString(channel)
	defer C.free(unsafe.Pointer(cid))
	defer C.free(unsafe.Pointer(cch))
	ptr, n := bytesArg(content)
	return p, int(C.shim_wrap(m.ctx, ptr, n, cid, cch, C.uintptr_t(p.key)))
}

// Unwrap calls SdsUnwrapReceivedMessage.
func (m *Manager) Unwrap(wire []byte) (*Pending, int) {
	p := newPending(m)
	ptr, n := bytesArg(wire)
	return p, int(C.shim_unwrap(m.ctx, ptr, n, C.uintptr_t(p.key)))
}

// StartPeriodicTasks calls SdsStartPeriodicTasks.
func (m *Manager) StartPeriodicTasks() (*Pending, int) {
	p := newPending(m)
	return p, int(C.shim_start_periodic_tasks(m.ctx, C.uintptr_t(p.key)))
}

// Reset calls SdsResetReliabilityManager.
func (m *Manager) Reset() (*Pending, int) {
	p := newPending(m)
	return p, int(C.shim_reset(m.ctx, C.uintptr_t(p.key)))
}

// Cleanup calls SdsCleanupReliabilityManager; after a successful one, any event for this
// manager is a violation.
func (m *Manager) Cleanup() (*Pending, int) {
	p := newPending(nil)
	ret := int(C.shim_cleanup(m.ctx, C.uintptr_t(p.key)))
	if ret == RetOK && p.Wait(CallTimeout) && p.ret == RetOK {
		m.closed.Store(true)
	}
	return p, ret
}

// Closed says whether a cleanup of this manager succeeded.
func (m *Manager) Closed() bool { return m.closed.Load() }

func (m *Manager) noteThread(tid int64) {
	m.mu.Lock()
	m.threads[tid] = true
	m.mu.Unlock()
}

// Threads returns how many OS threads ran this manager's event callbacks and successful
// operation results.
func (m *Manager) Threads() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.threads)
}

// Events returns a copy of the events received so far, in order.
func (m *Manager) Events() []Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Event(nil), m.events...)
}

// Operations returns the calls made on this manager (creation and cleanup excepted).
func (m *Manager) Operations() []*Pending {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]*Pending(nil), m.ops...)
}

// ParseWire parses a wrap result: the bytes as decimal numbers joined by commas.
func ParseWire(text string) ([]byte, error) {
	if text == "" {
		return nil, fmt.Errorf("empty wrap result")
	}
	out := make([]byte, 0, len(text)/3+1)
	v, digits := 0, 0
	for i := 0; i <= len(text); i++ {
		if i == len(text) || text[i] == ',' {
			if digits == 0 || v > 255 {
				return nil, fmt.Errorf("item %d is not a byte value, near %.40q", len(out), text[max(0, i-8):])
			}
			out = append(out, byte(v))
			v, digits = 0, 0
			continue
		}
		c := text[i]
		if c < '0' || c > '9' || digits == 3 {
			return nil, fmt.Errorf("item %d is not a byte value, near %.40q", len(out), text[max(0, i-8):])
		}
		v, digits = v*10+int(c-'0'), digits+1
	}
	return out, nil
}

// MissingDep is one entry of an unwrap result's missingDeps.
type MissingDep struct {
	MessageID     string `json:"messageId"`
	RetrievalHint string `json:"retrievalHint"`
}

// Unwrapped is an unwrap result.
type Unwrapped struct {
	Message     []byte
	ChannelID   string
	MissingDeps []MissingDep
	MessageID   string
	Kind        string
}

// ParseUnwrapped parses an unwrap result's JSON.
func ParseUnwrapped(text string) (Unwrapped, error) {
	// The "message" array of byte values is read like a wrap result and the rest with
	// encoding/json: decoding thousands of numbers with encoding/json is slow under -race.
	const key = `"message":[`
	start := strings.Index(text, key)
	if start < 0 {
		return Unwrapped{}, fmt.Errorf("unwrap result has no message array: %.120q", text)
	}
	end := strings.IndexByte(text[start+len(key):], ']')
	if end < 0 {
		return Unwrapped{}, fmt.Errorf("unwrap result's message array is not closed: %.120q", text)
	}
	end += start + len(key)
	var raw struct {
		Message     []int        `json:"message"`
		ChannelID   string       `json:"channelId"`
		MissingDeps []MissingDep `json:"missingDeps"`
		MessageID   string       `json:"messageId"`
		Kind        string       `json:"kind"`
	}
	rest := text[:start] + `"message":[]` + text[end+1:]
	if err := json.Unmarshal([]byte(rest), &raw); err != nil {
		return Unwrapped{}, fmt.Errorf("unwrap result is not the expected JSON (%v): %.120q", err, text)
	}
	u := Unwrapped{Message: []byte{}, ChannelID: raw.ChannelID, MissingDeps: raw.MissingDeps, MessageID: raw.MessageID, Kind: raw.Kind}
	if inner := strings.TrimSpace(text[start+len(key) : end]); inner != "" {
		m, err := ParseWire(inner)
		if err != nil {
			return Unwrapped{}, fmt.Errorf("unwrap result's message: %v", err)
		}
		u.Message = m
	}
	return u, nil
}
