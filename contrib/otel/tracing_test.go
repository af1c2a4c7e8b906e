package bgotel_test

import (
	"context"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/bgpool/bgpool"
	bgotel "github.com/bgpool/bgpool/contrib/otel"
)

// welcomeArgs are the args of the test Job.
type welcomeArgs struct{ To string }

func (welcomeArgs) Kind() string { return "welcome" }

// tracedPool returns a span recorder and a pool named mail whose tasks run
// in spans recorded there, with the tracing options given. The pool is
// shut down when the test ends.
func tracedPool(t *testing.T, size int, topts []bgotel.TracingOption, opts ...bgpool.Option) (*tracetest.SpanRecorder, trace.Tracer, *bgpool.Pool) {
	t.Helper()
	rec, tp := newRecorder(t)
	tr := newTracing(t, "mail", append([]bgotel.TracingOption{bgotel.WithTracerProvider(tp)}, topts...)...)
	p := newPool(t, size, append([]bgpool.Option{bgpool.WithTaskWrapper(tr.Wrap)}, opts...)...)
	return rec, tp.Tracer("test"), p
}

// request starts a span like an HTTP server's for a request, ended when the
// test ends if the test does not end it first.
func request(t *testing.T, tracer trace.Tracer) (context.Context, trace.Span) {
	t.Helper()
	ctx, span := tracer.Start(context.Background(), "POST /signup", trace.WithSpanKind(trace.SpanKindServer))
	t.Cleanup(func() { span.End() })
	return ctx, span
}

// spanNamed returns the one ended span named name.
func spanNamed(t *testing.T, rec *tracetest.SpanRecorder, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	var found []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == name {
			found = append(found, s)
		}
	}
	require.Len(t, found, 1, "ended spans named %q", name)
	return found[0]
}

// attrs returns a span's attributes by key.
func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

// spanSeen is a task that records the span context it runs in.
type spanSeen struct {
	mu sync.Mutex
	sc trace.SpanContext
}

func (s *spanSeen) task(ctx context.Context) error {
	s.mu.Lock()
	s.sc = trace.SpanContextFromContext(ctx)
	s.mu.Unlock()
	return nil
}

func (s *spanSeen) get() trace.SpanContext {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sc
}

func TestTaskSpanIsANewRootLinkedToTheSubmittersSpan(t *testing.T) {
	rec, tracer, p := tracedPool(t, 1, nil)
	ctx, req := request(t, tracer)

	var seen spanSeen
	require.NoError(t, p.Submit(ctx, seen.task))
	req.End() // the request ends long before its background work, as it usually does
	shutdown(t, p)

	task := spanNamed(t, rec, "mail task")
	assert.False(t, task.Parent().IsValid(), "the task's span has no parent")
	assert.NotEqual(t, req.SpanContext().TraceID(), task.SpanContext().TraceID(), "the task's span starts a trace of its own")
	require.Len(t, task.Links(), 1)
	assert.Equal(t, req.SpanContext(), task.Links()[0].SpanContext, "linked to the submitter's span")
	assert.Equal(t, task.SpanContext(), seen.get(), "the task runs with its span in its context")
	assert.Equal(t, trace.SpanKindInternal, task.SpanKind())
}

func TestTaskSpanWithoutASubmitterSpanHasNoLink(t *testing.T) {
	rec, _, p := tracedPool(t, 1, nil)
	require.NoError(t, p.Do(context.Background(), func(context.Context) error { return nil }))
	shutdown(t, p)

	task := spanNamed(t, rec, "mail task")
	assert.False(t, task.Parent().IsValid())
	assert.Empty(t, task.Links())
}

func TestAwaitedTasksAreNewRootsByDefault(t *testing.T) {
	rec, tracer, p := tracedPool(t, 1, nil)
	ctx, req := request(t, tracer)
	require.NoError(t, p.Do(ctx, func(context.Context) error { return nil }))
	shutdown(t, p)

	task := spanNamed(t, rec, "mail task")
	assert.False(t, task.Parent().IsValid(), "no parent without WithAwaitedAsChild")
	require.Len(t, task.Links(), 1)
	assert.Equal(t, req.SpanContext(), task.Links()[0].SpanContext)
}

func TestWithAwaitedAsChildMakesAwaitedTasksChildren(t *testing.T) {
	rec, tracer, p := tracedPool(t, 2, []bgotel.TracingOption{bgotel.WithAwaitedAsChild()})
	ctx, req := request(t, tracer)

	welcome := bgpool.NewJob(func(context.Context, welcomeArgs) error { return nil })
	require.NoError(t, welcome.Do(ctx, p, welcomeArgs{To: "ada"}), "awaited")
	g, _ := p.NewGroup(ctx)
	require.NoError(t, g.Submit(func(context.Context) error { return nil }), "awaited")
	require.NoError(t, g.Wait())
	done := make(chan struct{})
	require.NoError(t, p.Submit(ctx, func(context.Context) error { close(done); return nil }), "not awaited")
	<-done
	req.End()
	shutdown(t, p)

	var children, roots int
	for _, s := range rec.Ended() {
		if s.Name() == "POST /signup" {
			continue
		}
		if attrs(s)[bgotel.AwaitedKey].AsBool() {
			children++
			assert.Equal(t, req.SpanContext().SpanID(), s.Parent().SpanID(), "%s is a child of the request", s.Name())
			assert.Equal(t, req.SpanContext().TraceID(), s.SpanContext().TraceID(), "%s is in the request's trace", s.Name())
			assert.Empty(t, s.Links(), "a child needs no link")
			continue
		}
		roots++
		assert.False(t, s.Parent().IsValid(), "a task nobody waits for stays a new root")
		assert.NotEqual(t, req.SpanContext().TraceID(), s.SpanContext().TraceID())
		require.Len(t, s.Links(), 1)
		assert.Equal(t, req.SpanContext(), s.Links()[0].SpanContext)
	}
	assert.Equal(t, 2, children, "Job.Do and the Group's task")
	assert.Equal(t, 1, roots, "Submit's task")
}

func TestTaskSpanAttributes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec, _, p := tracedPool(t, 1, nil, bgpool.WithQueueSize(1))
		bg := context.Background()
		require.NoError(t, p.Submit(bg, func(context.Context) error { time.Sleep(3 * time.Second); return nil }))
		welcome := bgpool.NewJob(func(context.Context, welcomeArgs) error { return nil })
		require.NoError(t, welcome.Submit(bg, p, welcomeArgs{To: "ada"}), "queued behind the 3s task")
		shutdown(t, p)

		job := attrs(spanNamed(t, rec, "mail welcome"))
		assert.Equal(t, "mail", job[bgotel.PoolNameKey].AsString())
		assert.Equal(t, "welcome", job[bgotel.JobKindKey].AsString())
		assert.Equal(t, "completed", job[bgotel.OutcomeKey].AsString())
		assert.False(t, job[bgotel.AwaitedKey].AsBool())
		assert.InDelta(t, 3.0, job[bgotel.TimeInQueueKey].AsFloat64(), 0, "the Job waited 3s behind the first task, in seconds")

		plain := spanNamed(t, rec, "mail task")
		attrs := attrs(plain)
		assert.Equal(t, "mail", attrs[bgotel.PoolNameKey].AsString())
		assert.NotContains(t, attrs, bgotel.JobKindKey, "a plain task has no kind")
		assert.Equal(t, "completed", attrs[bgotel.OutcomeKey].AsString())
		assert.InDelta(t, 0.0, attrs[bgotel.TimeInQueueKey].AsFloat64(), 0, "the first task found a worker at once")
		assert.Equal(t, codes.Unset, plain.Status().Code)
		assert.Equal(t, 3*time.Second, plain.EndTime().Sub(plain.StartTime()), "the span covers the run, not the wait")
	})
}

func TestTaskSpanRecordsErrorsAndPanics(t *testing.T) {
	var handled []error
	var mu sync.Mutex
	rec, _, p := tracedPool(t, 1, nil, bgpool.WithErrorHandler(func(_ context.Context, err error) {
		mu.Lock()
		handled = append(handled, err)
		mu.Unlock()
	}))
	failing := bgpool.NewJob(func(context.Context, welcomeArgs) error { return errFail })
	assert.ErrorIs(t, failing.Do(context.Background(), p, welcomeArgs{}), errFail)
	panicking := func(context.Context) error { panic("template missing") }
	var pe *bgpool.PanicError
	require.ErrorAs(t, p.Do(context.Background(), panicking), &pe)
	shutdown(t, p)

	s := p.Stats()
	assert.Equal(t, uint64(1), s.Failed)
	assert.Equal(t, uint64(1), s.Panicked, "Wrap returns the panic as run gave it, so the pool counts it Panicked")
	mu.Lock()
	require.Len(t, handled, 2)
	assert.ErrorIs(t, handled[0], errFail, "Wrap returns the error unchanged")
	mu.Unlock()

	failed := spanNamed(t, rec, "mail welcome")
	assert.Equal(t, "failed", attrs(failed)[bgotel.OutcomeKey].AsString())
	assert.Equal(t, sdktrace.Status{Code: codes.Error, Description: errFail.Error()}, failed.Status())
	require.Len(t, failed.Events(), 1)
	assert.Equal(t, "exception", failed.Events()[0].Name)
	assert.Contains(t, failed.Events()[0].Attributes, attribute.String("exception.message", errFail.Error()))

	panicked := spanNamed(t, rec, "mail task")
	assert.Equal(t, "panicked", attrs(panicked)[bgotel.OutcomeKey].AsString())
	assert.Equal(t, codes.Error, panicked.Status().Code)
	assert.Contains(t, panicked.Status().Description, "template missing")
	require.Len(t, panicked.Events(), 1)
	ev := map[attribute.Key]attribute.Value{}
	for _, kv := range panicked.Events()[0].Attributes {
		ev[kv.Key] = kv.Value
	}
	assert.Contains(t, ev["exception.message"].AsString(), "template missing")
	assert.Equal(t, "*bgpool.PanicError", ev["exception.type"].AsString())
	assert.Contains(t, ev["exception.stacktrace"].AsString(), "TestTaskSpanRecordsErrorsAndPanics",
		"the stack is the task's, where it panicked")
}

func TestTaskSpanEndsWhenTheTaskCallsGoexit(t *testing.T) {
	rec, _, p := tracedPool(t, 1, nil)
	done := make(chan struct{})
	require.NoError(t, p.Submit(context.Background(), func(context.Context) error {
		defer close(done)
		runtime.Goexit()
		return nil
	}))
	<-done
	shutdown(t, p)

	assert.Equal(t, uint64(1), p.Stats().Failed, "bgpool counts Goexit failed")
	task := spanNamed(t, rec, "mail task")
	assert.Equal(t, "failed", attrs(task)[bgotel.OutcomeKey].AsString())
	assert.Equal(t, codes.Error, task.Status().Code)
	assert.Contains(t, task.Status().Description, "Goexit")
}

func TestNoSpanIsLeftOpenAfterADrainedShutdown(t *testing.T) {
	rec, tracer, p := tracedPool(t, 4, nil, bgpool.WithQueueSize(64), bgpool.WithPolicy(bgpool.Block))
	ctx, req := request(t, tracer)
	welcome := bgpool.NewJob(func(_ context.Context, a welcomeArgs) error {
		if strings.HasSuffix(a.To, "3") {
			return errFail
		}
		return nil
	})
	const submitters, perSubmitter = 4, 50
	var wg sync.WaitGroup
	for i := range submitters {
		wg.Go(func() {
			for j := range perSubmitter {
				switch (i + j) % 5 {
				case 0:
					_ = p.Submit(ctx, func(context.Context) error { return nil })
				case 1:
					_ = p.Do(ctx, func(context.Context) error { return errFail })
				case 2:
					_ = p.Submit(ctx, func(context.Context) error { panic("boom") })
				case 3:
					_ = welcome.Submit(ctx, p, welcomeArgs{To: strconv.Itoa(j)})
				default:
					_ = p.Submit(ctx, func(context.Context) error {
						defer func() { _ = recover() }()
						runtime.Goexit()
						return nil
					})
				}
			}
		})
	}
	wg.Wait()
	shutdown(t, p)
	req.End()

	s := p.Stats()
	require.Equal(t, uint64(submitters*perSubmitter), s.Submitted)
	ran := s.Completed + s.Failed + s.Panicked
	require.Equal(t, s.Submitted, ran, "every task ran")
	started, ended := rec.Started(), rec.Ended()
	assert.Len(t, started, int(ran)+1, "a span per task, and the request's")
	assert.Len(t, ended, len(started), "every span started was ended")
	endedIDs := map[trace.SpanID]bool{}
	for _, s := range ended {
		endedIDs[s.SpanContext().SpanID()] = true
	}
	for _, s := range started {
		assert.True(t, endedIDs[s.SpanContext().SpanID()], "span %s was ended", s.Name())
	}
}

func TestTasksRunAndEndTheSameWhenTheirSpansAreSampledOut(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(sdktrace.NeverSample()))
	t.Cleanup(func() { assert.NoError(t, tp.Shutdown(context.Background())) })
	tr := newTracing(t, "mail", bgotel.WithTracerProvider(tp))
	p := newPool(t, 1, bgpool.WithTaskWrapper(tr.Wrap))

	var seen spanSeen
	require.NoError(t, p.Do(context.Background(), seen.task))
	assert.ErrorIs(t, p.Do(context.Background(), func(context.Context) error { return errFail }), errFail)
	var pe *bgpool.PanicError
	require.ErrorAs(t, p.Do(context.Background(), func(context.Context) error { panic("boom") }), &pe)
	shutdown(t, p)

	s := p.Stats()
	assert.Equal(t, [3]uint64{1, 1, 1}, [3]uint64{s.Completed, s.Failed, s.Panicked})
	assert.Empty(t, rec.Ended(), "nothing sampled, nothing recorded")
	assert.True(t, seen.get().IsValid(), "the task still runs in its (unsampled) span")
	assert.False(t, seen.get().IsSampled())
}
