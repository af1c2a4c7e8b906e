package bgotel

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/bgpool/bgpool"
)

// exceptionStacktrace is the semantic conventions' attribute for a stack
// trace on an exception event, set to a panicking task's own stack.
const exceptionStacktrace = attribute.Key("exception.stacktrace")

// Tracing runs every task of a pool in a span of its own. Create one with
// NewTracing and pass its Wrap method to bgpool.New with
// bgpool.WithTaskWrapper. The zero Tracing is not usable. Wrap is safe for
// concurrent use.
//
// A task's span is a new root, linked to the span of the code that
// submitted it, not a child of it. A background task usually outlives the
// request that submitted it: as a child it would hang off a span that ended
// long before, and stretch that request's trace over minutes. Tasks that
// someone waits for can be made children instead with WithAwaitedAsChild.
type Tracing struct {
	tracer   trace.Tracer
	asChild  bool
	poolAttr attribute.KeyValue
	// taskName is the span name of a plain task, built once.
	taskName string
	pool     string
	// childOpts and rootOpts start a child span and a new root, built
	// once; a link is appended to a copy.
	childOpts []trace.SpanStartOption
	rootOpts  []trace.SpanStartOption
}

// NewTracing returns a Tracing for a pool named pool, which becomes the
// value of the bgpool.pool.name attribute on every span. Its Tracer is named
// ScopeName and comes from the TracerProvider given with WithTracerProvider
// (by default the global one).
//
// NewTracing returns an error, and no Tracing, when pool is empty or not
// valid UTF-8, or when an option is nil.
func NewTracing(pool string, opts ...TracingOption) (*Tracing, error) {
	if err := checkName("NewTracing", pool); err != nil {
		return nil, err
	}
	var o tracingOptions
	for i, opt := range opts {
		if opt == nil {
			return nil, fmt.Errorf("bgotel: NewTracing: option %d is nil", i)
		}
		if err := opt.applyTracing(&o); err != nil {
			return nil, err
		}
	}
	o.setDefaults()
	return &Tracing{
		tracer:    o.tracerProvider.Tracer(ScopeName),
		asChild:   o.awaitedAsChild,
		poolAttr:  PoolNameKey.String(pool),
		taskName:  pool + " task",
		pool:      pool,
		childOpts: []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindInternal)},
		rootOpts:  []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindInternal), trace.WithNewRoot()},
	}, nil
}

// Wrap runs one task in a span. It is meant for bgpool.WithTaskWrapper:
// bgpool.New(n, bgpool.WithTaskWrapper(t.Wrap)). It blocks as long as the
// task runs and returns what run returned, unchanged, so that the pool
// counts the outcome as it would without it.
//
// The span is named after the pool and the Job's kind ("mail welcome"), or
// "<pool> task" for a plain task. It starts when the task starts, as a new
// root linked to the span in ctx (the submitter's, since a task's context
// carries the submitter's values), or, with WithAwaitedAsChild and an
// awaited task, as its child. Its attributes are bgpool.pool.name,
// bgpool.task.time_in_queue (seconds), bgpool.task.awaited,
// bgpool.job.kind for a Job, and bgpool.task.outcome (completed, failed or
// panicked) when the task ends. A failed or panicked task's error is
// recorded on the span as an exception event (a panic with the task's own
// stack) and sets the span's status to Error.
//
// The span is ended however the task ends, a task that calls
// runtime.Goexit included (it is counted failed, as bgpool counts it). A
// task that returns a *bgpool.PanicError it got elsewhere (from a Do of its
// own, say) is recorded panicked, though the pool counts it failed: Wrap
// cannot tell that error from the task's own panic.
func (t *Tracing) Wrap(ctx context.Context, info bgpool.TaskInfo, run bgpool.Task) (err error) {
	name := t.taskName
	if info.Kind != "" {
		name = t.pool + " " + info.Kind
	}
	opts := t.childOpts
	if !t.asChild || !info.Awaited {
		opts = t.rootOpts
		if submitter := trace.SpanContextFromContext(ctx); submitter.IsValid() {
			opts = append(opts[:len(opts):len(opts)], trace.WithLinks(trace.Link{SpanContext: submitter}))
		}
	}
	ctx, span := t.tracer.Start(ctx, name, opts...)
	// A span that records nothing (a no-op provider, or a trace sampled
	// out) is given no attributes, which would cost allocations for
	// nothing; the price is that a sampler sees only the name and the link.
	recording := span.IsRecording()
	if recording {
		span.SetAttributes(t.poolAttr, TimeInQueueKey.Float64(info.QueueWait.Seconds()), AwaitedKey.Bool(info.Awaited))
		if info.Kind != "" {
			span.SetAttributes(JobKindKey.String(info.Kind))
		}
	}

	returned := false
	defer func() {
		if recording {
			t.record(span, err, returned)
		}
		span.End()
	}()
	err = run(ctx)
	returned = true
	return err
}

// record sets the outcome of a task that returned err (or did not return:
// runtime.Goexit) on its span, with the error and the status.
func (t *Tracing) record(span trace.Span, err error, returned bool) {
	switch pe, isPanic := err.(*bgpool.PanicError); {
	case !returned: // runtime.Goexit: bgpool counts the task failed
		span.SetAttributes(OutcomeKey.String(bgpool.OutcomeFailed.String()))
		span.SetStatus(codes.Error, "task called runtime.Goexit")
	case isPanic:
		span.SetAttributes(OutcomeKey.String(bgpool.OutcomePanicked.String()))
		span.RecordError(err, trace.WithAttributes(exceptionStacktrace.String(string(pe.Stack))))
		span.SetStatus(codes.Error, err.Error())
	case err != nil:
		span.SetAttributes(OutcomeKey.String(bgpool.OutcomeFailed.String()))
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	default:
		span.SetAttributes(OutcomeKey.String(bgpool.OutcomeCompleted.String()))
	}
}
