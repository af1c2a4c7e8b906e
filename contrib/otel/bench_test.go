package bgotel_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/bgpool/bgpool"
	bgotel "github.com/bgpool/bgpool/contrib/otel"
)

// BenchmarkTaskWrapper measures what bgpool.WithTaskWrapper costs per task:
// each op submits one empty task to 8 workers behind a queue of 1024 (Block),
// so that ns/op and allocs/op are per task, from Submit to the task's end.
// The contenders: no wrapper, a wrapper that only calls run, and
// bgotel's Tracing on a no-op TracerProvider, on the SDK with an exporter
// that drops every span, and on the SDK recording into a
// tracetest.SpanRecorder (which keeps every span, so the garbage collector's
// work grows with b.N). The submitter's context carries a remote span
// context, so that Tracing makes its link.
func BenchmarkTaskWrapper(b *testing.B) {
	submitter := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{1},
		SpanID:     trace.SpanID{2},
		TraceFlags: trace.FlagsSampled,
		Remote:     true,
	}))
	tracingOn := func(b *testing.B, tp trace.TracerProvider) bgpool.Option {
		t, err := bgotel.NewTracing("bench", bgotel.WithTracerProvider(tp))
		require.NoError(b, err)
		return bgpool.WithTaskWrapper(t.Wrap)
	}
	contenders := []struct {
		name string
		opts func(b *testing.B) []bgpool.Option
	}{
		{"wrapper=none", func(*testing.B) []bgpool.Option { return nil }},
		{"wrapper=noop", func(*testing.B) []bgpool.Option {
			return []bgpool.Option{bgpool.WithTaskWrapper(func(ctx context.Context, _ bgpool.TaskInfo, run bgpool.Task) error {
				return run(ctx)
			})}
		}},
		{"tracing=noop-provider", func(b *testing.B) []bgpool.Option {
			return []bgpool.Option{tracingOn(b, noop.NewTracerProvider())}
		}},
		{"tracing=sdk-noop-exporter", func(b *testing.B) []bgpool.Option {
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sdktrace.NewSimpleSpanProcessor(tracetest.NewNoopExporter())))
			b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
			return []bgpool.Option{tracingOn(b, tp)}
		}},
		{"tracing=sdk-recorder", func(b *testing.B) []bgpool.Option {
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(tracetest.NewSpanRecorder()))
			b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
			return []bgpool.Option{tracingOn(b, tp)}
		}},
	}
	for _, c := range contenders {
		b.Run(c.name, func(b *testing.B) {
			var wg sync.WaitGroup
			task := func(context.Context) error { wg.Done(); return nil }
			opts := append([]bgpool.Option{bgpool.WithQueueSize(1024), bgpool.WithPolicy(bgpool.Block)}, c.opts(b)...)
			p, err := bgpool.New(8, opts...)
			require.NoError(b, err)
			defer func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				require.NoError(b, p.Shutdown(ctx))
			}()
			b.ReportAllocs()
			for b.Loop() {
				wg.Add(1)
				if err := p.Submit(submitter, task); err != nil {
					b.Fatal(err)
				}
			}
			wg.Wait() // the last few hundred tasks: a negligible part of b.N
		})
	}
}

// BenchmarkObserve measures Metrics.Observe, the observer that feeds the
// histograms, on the SDK's MeterProvider.
func BenchmarkObserve(b *testing.B) {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	m, err := bgotel.NewMetrics("mail", bgotel.WithMeterProvider(mp))
	require.NoError(b, err)
	ev := bgpool.TaskEvent{Outcome: bgpool.OutcomeCompleted, Queued: true, Started: true,
		QueueWait: 3 * time.Millisecond, RunTime: 40 * time.Millisecond}
	b.Run("goroutines=1", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.Observe(ev)
		}
	})
	b.Run("goroutines=GOMAXPROCS", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				m.Observe(ev)
			}
		})
	})
}

// BenchmarkWrap measures Tracing.Wrap alone, called directly on one
// goroutine with an empty task: the span's own cost, without the pool's
// scheduling, which makes BenchmarkTaskWrapper's figures vary.
func BenchmarkWrap(b *testing.B) {
	submitter := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: trace.FlagsSampled, Remote: true,
	}))
	run := func(context.Context) error { return nil }
	info := bgpool.TaskInfo{QueueWait: time.Millisecond}
	providers := []struct {
		name string
		tp   func(b *testing.B) trace.TracerProvider
	}{
		{"provider=noop", func(*testing.B) trace.TracerProvider { return noop.NewTracerProvider() }},
		{"provider=sdk-noop-exporter", func(b *testing.B) trace.TracerProvider {
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sdktrace.NewSimpleSpanProcessor(tracetest.NewNoopExporter())))
			b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
			return tp
		}},
		{"provider=sdk-recorder", func(b *testing.B) trace.TracerProvider {
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(tracetest.NewSpanRecorder()))
			b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
			return tp
		}},
	}
	for _, pr := range providers {
		b.Run(pr.name, func(b *testing.B) {
			t, err := bgotel.NewTracing("bench", bgotel.WithTracerProvider(pr.tp(b)))
			require.NoError(b, err)
			b.ReportAllocs()
			for b.Loop() {
				_ = t.Wrap(submitter, info, run)
			}
		})
	}
}
