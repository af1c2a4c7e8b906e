package bgpool_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/time/rate"

	"github.com/bgpool/bgpool"
)

// FuzzPool runs a random program against a pool: a configuration (valid or
// not), then operations spread over up to three submitting goroutines
// (Submit, TrySubmit, Tune, Shutdown, Stats, pauses), with tasks that return,
// fail, panic, wait for their context, submit to their own pool or shut it
// down; and a final Shutdown at a random point. After every program it checks
// that no panic escaped, that no more tasks ran at once than the largest cap
// in force, that every task is accounted for, that every Shutdown returned
// within its deadline, and that no goroutine is left.
//
// CI runs the seeds below and those in testdata/fuzz/FuzzPool as ordinary
// tests; to search for new failures run
//
//	go test -run '^$' -fuzz FuzzPool -fuzztime 3m
func FuzzPool(f *testing.F) {
	for _, prog := range fuzzSeeds() {
		f.Add(prog.encode())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		runFuzzProgram(t, decodeFuzzProgram(data))
	})
}

// A fuzzProgram is what FuzzPool decodes its input into. The encoding is a
// seven-byte header (missing bytes read as zero) followed by two bytes per
// operation; see decodeFuzzProgram.
type fuzzProgram struct {
	size     int // 1 to 4
	lanes    int // submitting goroutines, 1 to 3
	queue    int // 0 to 4, or -1 for the default
	policy   fuzzPolicy
	script   uint16 // the custom policy's actions, 3 bits each
	timeout  bool   // WithTaskTimeout(2ms)
	maxWait  bool   // WithMaxQueueWait(1ms)
	rate     int    // 0 none, 1 1000/s, 2 10000/s, 3 rate.Inf
	burst    int    // 1 to 4
	observer bool
	panicky  bool // an error handler that panics every other call
	invalid  int  // 0, or which invalid configuration (1 to len(invalidConfigs))

	shutdownAfter int  // index into shutdownDelays
	deadline      int  // index into fuzzDeadlines
	releaseFirst  bool // let blocked tasks return before the final Shutdown
	twice         bool // call the final Shutdown twice concurrently

	ops []fuzzOp
}

type fuzzPolicy uint8

const (
	polBlock fuzzPolicy = iota
	polBlockFor
	polDrop
	polReject
	polDropOldest
	polCallerRuns
	polCustom
	polDefault
)

// A fuzzOp is one operation, run on the goroutine lane.
type fuzzOp struct {
	lane int
	kind opKind
	arg  byte
}

type opKind uint8

const (
	opSubmit       opKind = 0  // Submit(ctx, task(arg)); kinds 1 to 3, 15 too
	opSubmitCtx    opKind = 4  // Submit with a context that ends soon: fuzzCtxTimeouts[arg>>3%4]
	opTrySubmit    opKind = 5  // TrySubmit(ctx, task(arg)); kind 6 too
	opTune         opKind = 7  // Tune(arg%6 - 1)
	opStats        opKind = 8  // check Stats' invariants while the pool runs
	opShutdown     opKind = 9  // Shutdown with fuzzDeadlines[arg%4], or no deadline when arg%5 == 4
	opPause        opKind = 10 // Gosched or a short sleep; kind 11 too
	opRelease      opKind = 12 // let every blocked task return
	opBadInput     opKind = 13 // a nil context or task
	opSubmitCancel opKind = 14 // Submit with a context already cancelled
)

// Task kinds, from a Submit's arg%8.
const (
	taskReturn   = iota // returns nil
	taskFail            // returns an error
	taskPanic           // panics
	taskBlock           // waits for its context or the release
	taskBrief           // waits 200µs, its context or the release
	taskSubmit          // submits a leaf task to its own pool
	taskTry             // try-submits a leaf task to its own pool
	taskShutdown        // calls Shutdown with its own context
)

var (
	shutdownDelays  = [...]time.Duration{-1, 0, time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond, 30 * time.Millisecond}
	fuzzDeadlines   = [...]time.Duration{25 * time.Millisecond, 5 * time.Millisecond, time.Millisecond, 0}
	fuzzCtxTimeouts = [...]time.Duration{0, 100 * time.Microsecond, time.Millisecond, 3 * time.Millisecond}
)

// maxShutdownWait bounds the final Shutdown's delay when it waits for the
// lanes (shutdownDelays[0]): a lane may be blocked until Shutdown.
const maxShutdownWait = 30 * time.Millisecond

// shutdownMargin is how late Shutdown may return after its deadline: the
// race detector and a loaded fuzzing machine slow everything down.
const shutdownMargin = 500 * time.Millisecond

const maxFuzzOps = 64

var invalidConfigs = []struct {
	name string
	size int
	opt  bgpool.Option
}{
	{"size 0", 0, nil},
	{"size -1", -1, nil},
	{"negative queue", 1, bgpool.WithQueueSize(-1)},
	{"nil policy", 1, bgpool.WithPolicy(nil)},
	{"nil PolicyFunc", 1, bgpool.WithPolicy(bgpool.PolicyFunc(nil))},
	{"nil option", 1, nil},
	{"negative task timeout", 1, bgpool.WithTaskTimeout(-time.Millisecond)},
	{"negative max queue wait", 1, bgpool.WithMaxQueueWait(-time.Millisecond)},
	{"zero rate", 1, bgpool.WithRateLimit(0, 1)},
	{"zero burst", 1, bgpool.WithRateLimit(10, 0)},
	{"NaN rate", 1, bgpool.WithRateLimit(rate.Limit(math.NaN()), 1)},
	{"negative infinite rate", 1, bgpool.WithRateLimit(rate.Limit(math.Inf(-1)), 1)},
}

// decodeFuzzProgram reads data as
//
//	byte 0: size-1 (bits 0-1), lanes-1 (bits 2-3, mod 3), queue (bits 4-6; 5-7 mean the default)
//	byte 1: policy (bits 0-2)
//	bytes 2-3: the custom policy's script, little-endian
//	byte 4: timeout (bit 0), max wait (bit 1), rate (bits 2-3), burst-1 (bits 4-5), observer (bit 6), panicky (bit 7)
//	byte 5: shutdown delay (bits 0-2), deadline (bits 3-4), release first (bit 5), twice (bit 6)
//	byte 6: invalid configuration (1 to 12; anything else is none)
//	then pairs: lane (bits 6-7, mod lanes) and kind (bits 0-3); arg
func decodeFuzzProgram(data []byte) fuzzProgram {
	var h [7]byte
	copy(h[:], data)
	prog := fuzzProgram{
		size:          int(h[0]&3) + 1,
		lanes:         int(h[0]>>2&3)%3 + 1,
		queue:         int(h[0] >> 4 & 7),
		policy:        fuzzPolicy(h[1] & 7),
		script:        uint16(h[2]) | uint16(h[3])<<8,
		timeout:       h[4]&1 != 0,
		maxWait:       h[4]&2 != 0,
		rate:          int(h[4] >> 2 & 3),
		burst:         int(h[4]>>4&3) + 1,
		observer:      h[4]&64 != 0,
		panicky:       h[4]&128 != 0,
		shutdownAfter: int(h[5] & 7),
		deadline:      int(h[5] >> 3 & 3),
		releaseFirst:  h[5]&32 != 0,
		twice:         h[5]&64 != 0,
	}
	if prog.queue > 4 {
		prog.queue = -1
	}
	if n := int(h[6]); n >= 1 && n <= len(invalidConfigs) {
		prog.invalid = n
	}
	if len(data) > len(h) {
		rest := data[len(h):]
		for i := 0; i+1 < len(rest) && len(prog.ops) < maxFuzzOps; i += 2 {
			prog.ops = append(prog.ops, fuzzOp{
				lane: int(rest[i]>>6) % prog.lanes,
				kind: opKind(rest[i] & 15),
				arg:  rest[i+1],
			})
		}
	}
	return prog
}

// encode is the inverse of decodeFuzzProgram, for the seeds.
func (prog fuzzProgram) encode() []byte {
	queue := prog.queue
	if queue < 0 {
		queue = 7
	}
	b := []byte{
		byte(prog.size-1) | byte(prog.lanes-1)<<2 | byte(queue)<<4,
		byte(prog.policy),
		byte(prog.script), byte(prog.script >> 8),
		bit(prog.timeout, 0) | bit(prog.maxWait, 1) | byte(prog.rate)<<2 | byte(prog.burst-1)<<4 |
			bit(prog.observer, 6) | bit(prog.panicky, 7),
		byte(prog.shutdownAfter) | byte(prog.deadline)<<3 | bit(prog.releaseFirst, 5) | bit(prog.twice, 6),
		byte(prog.invalid),
	}
	for _, op := range prog.ops {
		b = append(b, byte(op.lane)<<6|byte(op.kind), op.arg)
	}
	return b
}

func bit(b bool, n uint) byte {
	if b {
		return 1 << n
	}
	return 0
}

// fuzzSeeds covers each policy and option, the invalid configurations, and
// the paths of Shutdown: drained, abandoned, from a task, from two callers.
func fuzzSeeds() []fuzzProgram {
	mixed := []fuzzOp{
		{0, opSubmit, taskReturn}, {1, opSubmit, taskFail}, {2, opSubmit, taskPanic},
		{0, opSubmit, taskBrief}, {1, opTrySubmit, taskBlock}, {2, opSubmit, taskSubmit},
		{0, opSubmitCtx, 2<<3 + taskReturn}, {1, opTune, 4}, {2, opStats, 0},
		{0, opSubmit, taskTry}, {1, opSubmitCancel, taskBrief}, {2, opPause, 2},
		{0, opTune, 2}, {1, opSubmit, taskBlock}, {2, opSubmit, taskReturn},
		{0, opStats, 0}, {1, opBadInput, 1}, {2, opRelease, 0}, {0, opSubmit, taskFail},
	}
	var seeds []fuzzProgram
	for pol := polBlock; pol <= polDefault; pol++ {
		seeds = append(seeds, fuzzProgram{size: 2, lanes: 3, queue: 1, policy: pol, script: 0o43210, burst: 1, ops: mixed})
	}
	for i := range invalidConfigs {
		seeds = append(seeds, fuzzProgram{size: 1, lanes: 3, queue: -1, burst: 1, invalid: i + 1, ops: mixed[:3]})
	}
	seeds = append(seeds,
		// Everything on: timeouts, max queue wait, rate limit, observer, a panicking handler.
		fuzzProgram{size: 3, lanes: 3, queue: 4, policy: polCustom, script: 0o76543, timeout: true, maxWait: true,
			rate: 1, burst: 2, observer: true, panicky: true, shutdownAfter: 4, ops: mixed},
		// Shutdown abandons blocked tasks, called twice at once with a deadline that has passed.
		fuzzProgram{size: 2, lanes: 2, queue: 2, policy: polBlock, burst: 1, deadline: 3, twice: true, observer: true,
			ops: []fuzzOp{{0, opSubmit, taskBlock}, {1, opSubmit, taskBlock}, {0, opSubmit, taskBlock}, {1, opSubmit, taskBlock}, {0, opSubmit, taskBlock}}},
		// Shutdown drains once the blocked tasks are released.
		fuzzProgram{size: 1, lanes: 1, queue: 3, policy: polReject, burst: 1, releaseFirst: true,
			ops: []fuzzOp{{0, opSubmit, taskBlock}, {0, opSubmit, taskBlock}, {0, opSubmit, taskReturn}, {0, opTrySubmit, taskReturn}}},
		// Shutdown from inside a task, then more submits.
		fuzzProgram{size: 2, lanes: 2, queue: 0, policy: polCallerRuns, burst: 1, shutdownAfter: 7,
			ops: []fuzzOp{{0, opSubmit, taskBrief}, {1, opSubmit, taskShutdown}, {0, opPause, 3}, {1, opSubmit, taskReturn}, {0, opTrySubmit, taskReturn}}},
		// Tasks submit to their own full pool (ants #197), with Shutdown racing the lanes.
		fuzzProgram{size: 1, lanes: 3, queue: 0, policy: polBlock, burst: 1, shutdownAfter: 2, deadline: 1,
			ops: []fuzzOp{{0, opSubmit, taskSubmit}, {1, opSubmit, taskSubmit}, {2, opSubmit, taskTry}, {0, opSubmit, taskSubmit}, {1, opShutdown, 1}, {2, opSubmit, taskReturn}}},
		// Tune up and down while tasks hold workers, with a lane's Shutdown without deadline.
		fuzzProgram{size: 1, lanes: 2, queue: 2, policy: polDropOldest, rate: 2, burst: 3,
			ops: []fuzzOp{{0, opSubmit, taskBlock}, {0, opTune, 5}, {1, opSubmit, taskBrief}, {1, opSubmit, taskBrief}, {0, opTune, 1},
				{1, opSubmit, taskBrief}, {0, opTune, 0}, {1, opStats, 0}, {0, opShutdown, 4}, {1, opSubmit, taskReturn}}},
	)
	return seeds
}

// fuzzKey carries the lane's number to the tasks, which check that they see it.
type fuzzKey struct{}

var (
	errFuzzTask   = errors.New("fuzz: task failed")
	errFuzzPolicy = errors.New("fuzz: policy refused")
	errFuzzPanic  = errors.New("fuzz: panic value")
)

// fuzzRun is the state of one program's run, shared by its goroutines. The
// goroutines record problems; only the test goroutine reports them.
type fuzzRun struct {
	prog fuzzProgram
	p    *bgpool.Pool

	release     chan struct{}
	releaseOnce sync.Once

	calls   atomic.Uint64 // calls to Submit and TrySubmit
	maxCap  atomic.Int64  // the largest size the pool was given
	closing atomic.Bool   // a Shutdown call has begun
	closed  atomic.Bool   // a Shutdown call has returned

	started, returnedNil, returnedErr, panicked atomic.Int64
	handled                                     atomic.Int64 // error handler calls
	outcomes                                    [bgpool.OutcomeHandedOff + 1]atomic.Uint64
	policyCalls                                 atomic.Uint32

	mu       sync.Mutex
	problems []string
	lanes    map[int64]bool // goroutine ids of the lanes, fixed before they run
	runners  map[int64]int  // goroutine id -> tasks running on it (nested CallerRuns counts once)
	peak     int            // most goroutines other than lanes running tasks at once
	onLane   int            // tasks run on a lane's goroutine (CallerRuns)
	onCaller int            // tasks running now on a submitter's goroutine (CallerRuns on a lane, or nested in a task)
	peakCall int            // most of those at once: Stats counts them Running, beyond the cap
}

func (r *fuzzRun) problem(format string, args ...any) {
	r.mu.Lock()
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

func (r *fuzzRun) releaseAll() { r.releaseOnce.Do(func() { close(r.release) }) }

// enter records that a task runs on the current goroutine, and returns the
// function that records that it stopped.
func (r *fuzzRun) enter() (leave func()) {
	id := goid()
	r.mu.Lock()
	onCaller := r.lanes[id] || r.runners[id] > 0
	if onCaller {
		r.onCaller++
		r.peakCall = max(r.peakCall, r.onCaller)
	}
	if r.lanes[id] {
		r.onLane++
	} else {
		r.runners[id]++
		r.peak = max(r.peak, len(r.runners))
	}
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		if onCaller {
			r.onCaller--
		}
		if !r.lanes[id] {
			if r.runners[id]--; r.runners[id] == 0 {
				delete(r.runners, id)
			}
		}
		r.mu.Unlock()
	}
}

// waitFor polls cond until it holds or d passes, and reports whether it held.
func waitFor(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); !cond(); time.Sleep(100 * time.Microsecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// goid returns the current goroutine's id, read from its stack header
// "goroutine 123 [running]:". It tells a task run by CallerRuns on a lane from
// one run by a worker.
func goid() int64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		b = b[:i]
	}
	id, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		panic("fuzz: cannot parse goroutine id from " + strconv.Quote(string(buf[:])))
	}
	return id
}

func (r *fuzzRun) options() (size int, opts []bgpool.Option) {
	prog := r.prog
	opts = append(opts, bgpool.WithLogger(slog.New(slog.DiscardHandler)))
	if prog.queue >= 0 {
		opts = append(opts, bgpool.WithQueueSize(prog.queue))
	}
	switch prog.policy {
	case polBlock:
		opts = append(opts, bgpool.WithPolicy(bgpool.Block))
	case polBlockFor:
		opts = append(opts, bgpool.WithPolicy(bgpool.BlockFor(time.Millisecond)))
	case polDrop:
		opts = append(opts, bgpool.WithPolicy(bgpool.Drop))
	case polReject:
		opts = append(opts, bgpool.WithPolicy(bgpool.Reject))
	case polDropOldest:
		opts = append(opts, bgpool.WithPolicy(bgpool.DropOldest))
	case polCallerRuns:
		opts = append(opts, bgpool.WithPolicy(bgpool.CallerRuns))
	case polCustom:
		opts = append(opts, bgpool.WithPolicy(bgpool.PolicyFunc(r.customPolicy)))
	}
	if prog.timeout {
		opts = append(opts, bgpool.WithTaskTimeout(2*time.Millisecond))
	}
	if prog.maxWait {
		opts = append(opts, bgpool.WithMaxQueueWait(time.Millisecond))
	}
	switch prog.rate {
	case 1:
		opts = append(opts, bgpool.WithRateLimit(1000, prog.burst))
	case 2:
		opts = append(opts, bgpool.WithRateLimit(10000, prog.burst))
	case 3:
		opts = append(opts, bgpool.WithRateLimit(rate.Inf, prog.burst))
	}
	if prog.observer {
		opts = append(opts, bgpool.WithObserver(r.observe))
	}
	if prog.panicky {
		opts = append(opts, bgpool.WithErrorHandler(func(context.Context, error) {
			if r.handled.Add(1)%2 == 0 {
				panic("fuzz: error handler panicked")
			}
		}))
	}
	size = prog.size
	if prog.invalid > 0 {
		bad := invalidConfigs[prog.invalid-1]
		size = bad.size
		opts = append(opts, bad.opt) // nil for "nil option"; size 0 and -1 add a nil too, but fail first
	}
	return size, opts
}

// customPolicy settles each overflowing task with the next action of the
// program's script, and checks that a settled task cannot be settled again.
func (r *fuzzRun) customPolicy(ctx context.Context, o *bgpool.Overflow) error {
	n := r.policyCalls.Add(1) - 1
	action := r.prog.script >> (3 * (n % 5)) & 7
	var err error
	switch action {
	case 0: // wait briefly, then drop
		wctx, cancel := context.WithTimeout(ctx, time.Millisecond)
		err = o.Wait(wctx)
		cancel()
		if err != nil {
			return o.Drop()
		}
	case 1:
		err = o.Drop()
	case 2:
		err = o.Reject()
	case 3:
		err = o.DropOldest()
	case 4:
		err = o.Run()
	case 5: // settle nothing: Submit returns ErrOverloaded
		return nil
	case 6: // settle nothing: Submit returns our error
		return errFuzzPolicy
	case 7: // wait as long as the submitter's context allows
		if err = o.Wait(ctx); err != nil {
			return err
		}
	}
	if o.Reject() == nil {
		r.problem("custom policy: Reject after action %d settled the task a second time", action)
	}
	return err
}

func (r *fuzzRun) observe(ev bgpool.TaskEvent) {
	if int(ev.Outcome) >= len(r.outcomes) || ev.Outcome == 0 {
		r.problem("observer: unknown outcome %d", ev.Outcome)
		return
	}
	r.outcomes[ev.Outcome].Add(1)
	if ev.QueueWait < 0 || ev.RunTime < 0 {
		r.problem("observer: negative duration in %+v", ev)
	}
	switch ev.Outcome {
	case bgpool.OutcomeFailed, bgpool.OutcomeRejected:
		if ev.Err == nil {
			r.problem("observer: %v without an error", ev.Outcome)
		}
	case bgpool.OutcomePanicked:
		var pe *bgpool.PanicError
		if !errors.As(ev.Err, &pe) {
			r.problem("observer: panicked with error %v, want a *PanicError", ev.Err)
		}
	default:
		if ev.Err != nil {
			r.problem("observer: %v with error %v, want none", ev.Outcome, ev.Err)
		}
	}
}

// task returns a task of the given kind.
func (r *fuzzRun) task(kind byte) bgpool.Task {
	return func(ctx context.Context) error {
		leave := r.enter()
		defer leave()
		r.started.Add(1)
		if ctx.Value(fuzzKey{}) == nil {
			r.problem("task: its context lost the submitter's value")
		}
		switch kind % 8 {
		case taskFail:
			r.returnedErr.Add(1)
			return errFuzzTask
		case taskPanic:
			r.panicked.Add(1)
			if r.started.Load()%2 == 0 {
				panic("fuzz: task panicked")
			}
			panic(errFuzzPanic)
		case taskBlock:
			select {
			case <-ctx.Done():
				r.returnedErr.Add(1)
				return ctx.Err()
			case <-r.release:
			}
		case taskBrief:
			t := time.NewTimer(200 * time.Microsecond)
			select {
			case <-ctx.Done():
			case <-r.release:
			case <-t.C:
			}
			t.Stop()
		case taskSubmit:
			sctx, cancel := context.WithTimeout(ctx, time.Millisecond)
			r.submit(sctx, "nested Submit", kind>>3, false, false)
			cancel()
		case taskTry:
			r.submit(ctx, "nested TrySubmit", kind>>3, true, false)
		case taskShutdown:
			r.closing.Store(true)
			start := time.Now()
			err := r.p.Shutdown(ctx)
			if err != nil {
				r.problem("Shutdown from a task: got %v, want nil", err)
			}
			if d := time.Since(start); d > shutdownMargin {
				r.problem("Shutdown from a task took %v, want no wait", d)
			}
			r.closed.Store(true)
		}
		r.returnedNil.Add(1)
		return nil
	}
}

// submit calls Submit or TrySubmit with a task of kind%5 (tasks that do not
// submit again) and checks the error against the policy.
func (r *fuzzRun) submit(ctx context.Context, what string, kind byte, try, lane bool) {
	var task bgpool.Task
	if lane {
		task = r.task(kind)
	} else {
		task = r.task(kind % 5)
	}
	closedBefore := r.closed.Load()
	r.calls.Add(1)
	var err error
	if try {
		err = r.p.TrySubmit(ctx, task)
	} else {
		err = r.p.Submit(ctx, task)
	}
	ok := false
	switch {
	case closedBefore:
		ok = errors.Is(err, bgpool.ErrClosed)
	case err == nil:
		ok = true
	case errors.Is(err, bgpool.ErrClosed):
		ok = r.closing.Load()
	case errors.Is(err, bgpool.ErrOverloaded):
		// Only a policy that may refuse, TrySubmit, or a wait that ended.
		ok = try || ctx.Err() != nil || !lane ||
			r.prog.policy == polReject || r.prog.policy == polBlockFor || r.prog.policy == polCustom
	case errors.Is(err, errFuzzPolicy):
		ok = !try && r.prog.policy == polCustom
	}
	if !ok {
		r.problem("%s (policy %d, closed before %v): unexpected error %v", what, r.prog.policy, closedBefore, err)
	}
}

func (r *fuzzRun) shutdown(ctx context.Context, what string) {
	deadline, hasDeadline := ctx.Deadline()
	r.closing.Store(true)
	err := r.p.Shutdown(ctx)
	if hasDeadline {
		if late := time.Since(deadline); late > shutdownMargin {
			r.problem("%s returned %v after its deadline", what, late)
		}
	}
	r.closed.Store(true)
	if err == nil {
		// A Shutdown that saw the pool drain cannot have been preceded by an
		// abandonment, nor followed by one that abandoned anything.
		if a := r.p.Stats().Abandoned; a != 0 {
			r.problem("%s returned nil, but %d tasks were abandoned", what, a)
		}
	}
	if err != nil && !errors.Is(err, context.DeadlineExceeded) && !strings.Contains(err.Error(), "abandoned by an earlier Shutdown") {
		r.problem("%s: unexpected error %v", what, err)
	}
}

func (r *fuzzRun) do(ctx context.Context, op fuzzOp) {
	switch op.kind {
	case opSubmit, 1, 2, 3, 15:
		r.submit(ctx, "Submit", op.arg, false, true)
	case opSubmitCtx:
		sctx, cancel := context.WithTimeout(ctx, fuzzCtxTimeouts[op.arg>>3%4])
		r.submit(sctx, "Submit with a timeout", op.arg, false, true)
		cancel()
	case opSubmitCancel:
		sctx, cancel := context.WithCancel(ctx)
		cancel()
		r.submit(sctx, "Submit with a cancelled context", op.arg, false, true)
	case opTrySubmit, 6:
		r.submit(ctx, "TrySubmit", op.arg, true, true)
	case opTune:
		n := int(op.arg%6) - 1
		if n >= 1 { // raise maxCap before Tune, so that no task can run above it unseen
			for m := r.maxCap.Load(); int64(n) > m; m = r.maxCap.Load() {
				if r.maxCap.CompareAndSwap(m, int64(n)) {
					break
				}
			}
		}
		r.p.Tune(n)
	case opStats:
		s := r.p.Stats()
		if s.Ended() > s.Submitted {
			r.problem("Stats: more tasks settled than submitted: %+v", s)
		}
		r.mu.Lock()
		onCallers := int64(r.peakCall)
		r.mu.Unlock()
		if r.prog.policy == polCallerRuns || r.prog.policy == polCustom {
			// A task that CallerRuns runs counts as Running from just before
			// its function is called (on a lane, or nested in a task on a
			// worker) to just after it returns, a little longer than the
			// tracker sees it: allow one such task per lane and per worker.
			onCallers += int64(r.prog.lanes) + r.maxCap.Load()
		}
		if int64(s.Running) > r.maxCap.Load()+onCallers {
			r.problem("Stats: Running %d exceeds the largest cap %d plus %d tasks run by CallerRuns: %+v", s.Running, r.maxCap.Load(), onCallers, s)
		}
	case opShutdown:
		if op.arg%5 == 4 {
			r.shutdown(ctx, "a lane's Shutdown without deadline")
			return
		}
		sctx, cancel := context.WithTimeout(ctx, fuzzDeadlines[op.arg%4])
		r.shutdown(sctx, "a lane's Shutdown")
		cancel()
	case opPause, 11:
		switch op.arg % 4 {
		case 0:
			runtime.Gosched()
		case 1:
			time.Sleep(50 * time.Microsecond)
		case 2:
			time.Sleep(200 * time.Microsecond)
		case 3:
			time.Sleep(time.Millisecond)
		}
	case opRelease:
		r.releaseAll()
	case opBadInput:
		r.calls.Add(1)
		var err error
		switch op.arg % 3 {
		case 0:
			//lint:ignore SA1012 a nil context is the bad input under test
			err = r.p.Submit(nil, noop) //nolint:staticcheck
		case 1:
			err = r.p.Submit(ctx, nil)
		case 2:
			err = r.p.TrySubmit(ctx, nil)
		}
		if err == nil || !strings.Contains(err.Error(), "nil") {
			r.problem("bad input %d: got %v, want an error about nil", op.arg%3, err)
		}
	}
}

func runFuzzProgram(t *testing.T, prog fuzzProgram) {
	ignore := goleak.IgnoreCurrent() // before New: the pool's goroutines must all be gone at the end
	r := &fuzzRun{
		prog:    prog,
		release: make(chan struct{}),
		lanes:   map[int64]bool{},
		runners: map[int64]int{},
	}
	size, opts := r.options()
	p, err := bgpool.New(size, opts...)
	if prog.invalid > 0 {
		assert.Error(t, err, "invalid configuration %q", invalidConfigs[prog.invalid-1].name)
		assert.Nil(t, p)
		assert.NoError(t, goleak.Find(ignore), "a failed New left goroutines")
		return
	}
	require.NoError(t, err)
	r.p = p
	r.maxCap.Store(int64(size))

	// Lanes register their goroutine ids, then run their operations.
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	escaped := make(chan any, prog.lanes)
	for lane := range prog.lanes {
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			defer func() {
				if v := recover(); v != nil {
					escaped <- v
				}
			}()
			r.mu.Lock()
			r.lanes[goid()] = true
			r.mu.Unlock()
			ready.Done()
			<-start
			ctx := context.WithValue(context.Background(), fuzzKey{}, lane)
			for _, op := range prog.ops {
				if op.lane == lane {
					r.do(ctx, op)
				}
			}
		}()
	}
	ready.Wait()
	lanesDone := make(chan struct{})
	go func() {
		done.Wait()
		close(lanesDone)
	}()
	close(start)

	// The final Shutdown, at a random point.
	if d := shutdownDelays[prog.shutdownAfter]; d < 0 {
		select {
		case <-lanesDone:
		case <-time.After(maxShutdownWait):
		}
	} else if d > 0 {
		time.Sleep(d)
	}
	if prog.releaseFirst {
		r.releaseAll()
	}
	ctx, cancel := context.WithTimeout(context.Background(), fuzzDeadlines[prog.deadline])
	var final sync.WaitGroup
	if prog.twice {
		final.Go(func() { r.shutdown(ctx, "the second final Shutdown") })
	}
	r.shutdown(ctx, "the final Shutdown")
	final.Wait()
	cancel()
	// Shutdown returned: it drained the pool, or it cancelled the tasks it
	// abandoned, which all honour their context. Either way no task may be
	// left on a worker; only CallerRuns tasks, on a lane, may still block.
	workersIdle := waitFor(5*time.Second, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.runners) == 0
	})
	assert.True(t, workersIdle, "tasks still run on workers after Shutdown returned")
	r.releaseAll()

	select {
	case <-lanesDone:
	case <-time.After(10 * time.Second):
		buf := make([]byte, 1<<20)
		t.Fatalf("the submitting goroutines are stuck after Shutdown:\n%s", buf[:runtime.Stack(buf, true)])
	}
	close(escaped)
	for v := range escaped {
		t.Errorf("a panic escaped to a submitter: %v", v)
	}
	assert.NoError(t, goleak.Find(ignore), "goroutines left after Shutdown")

	// The pool is quiet: every task is accounted for.
	s := p.Stats()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, msg := range r.problems {
		t.Error(msg)
	}
	assert.Equal(t, r.calls.Load(), s.Submitted, "Submitted: got %d, want the number of calls", s.Submitted)
	assertBalanced(t, s, "at quiescence")
	assert.Zero(t, s.Running, "Running at quiescence")
	assert.Zero(t, s.Queued, "Queued at quiescence")
	assert.LessOrEqual(t, int64(r.peak), r.maxCap.Load(), "tasks running at once on workers, against the largest cap")
	if prog.policy != polCallerRuns && prog.policy != polCustom {
		assert.Zero(t, r.onLane, "tasks run on a submitter's goroutine without CallerRuns")
	}
	// What the tasks saw agrees with what the pool counted.
	started, ran := r.started.Load(), r.returnedNil.Load()+r.returnedErr.Load()+r.panicked.Load()
	assert.Equal(t, started, ran, "every task that started returned or panicked")
	assert.LessOrEqual(t, s.Completed, uint64(r.returnedNil.Load()), "Completed")
	assert.LessOrEqual(t, s.Failed, uint64(r.returnedErr.Load()), "Failed")
	assert.LessOrEqual(t, s.Panicked, uint64(r.panicked.Load()), "Panicked")
	assert.LessOrEqual(t, uint64(started)-(s.Completed+s.Failed+s.Panicked), s.Abandoned,
		"tasks that started but were not counted by outcome must have been abandoned")

	if prog.observer {
		got := func(o bgpool.Outcome) uint64 { return r.outcomes[o].Load() }
		assert.Equal(t, s.Completed, got(bgpool.OutcomeCompleted), "observed completed")
		assert.Equal(t, s.Failed, got(bgpool.OutcomeFailed), "observed failed")
		assert.Equal(t, s.Panicked, got(bgpool.OutcomePanicked), "observed panicked")
		assert.Equal(t, s.Dropped, got(bgpool.OutcomeDropped)+got(bgpool.OutcomeExpired), "observed dropped and expired")
		assert.Equal(t, s.Rejected, got(bgpool.OutcomeRejected), "observed rejected")
		assert.Equal(t, s.Abandoned, got(bgpool.OutcomeAbandoned), "observed abandoned")
	}
}
