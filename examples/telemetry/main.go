// Command telemetry shows one bgpool pool watched by Prometheus and by
// OpenTelemetry at once: two observers (bgpool.WithObserver adds, so both
// are called) feed the two sets of histograms, both read the counters from
// the pool's Stats, and a task wrapper runs every task in a span that is a
// new root linked to the request's span.
//
//	cd examples/telemetry && go run . -addr 127.0.0.1:8080
//	curl -X POST 'http://127.0.0.1:8080/signup?email=ada@example.com'
//	curl http://127.0.0.1:8080/metrics
//
// Prometheus scrapes /metrics. Spans and OpenTelemetry metrics go to the
// SDK's stdout exporters, one JSON object a line, on standard output or in
// the files that -traces and -metrics name; in production an OTLP exporter
// takes their place. It stops on SIGTERM or SIGINT: it drains the pool
// within 10 seconds, then flushes the spans and the last metrics.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdoutmetric"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/bgpool/bgpool"
	bgotel "github.com/bgpool/bgpool/contrib/otel"
	bgprom "github.com/bgpool/bgpool/contrib/prometheus"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to listen on")
	tracesPath := flag.String("traces", "", "file to write spans to, one JSON object a line (default standard output)")
	metricsPath := flag.String("metrics", "", "file to write OpenTelemetry metrics to, one JSON object a line (default standard output)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	if err := run(ctx, *addr, *tracesPath, *metricsPath); err != nil {
		slog.Error("telemetry stopped", "error", err)
		os.Exit(1)
	}
}

// run serves on addr until ctx is done, then drains the pool and flushes
// the telemetry.
func run(ctx context.Context, addr, tracesPath, metricsPath string) (err error) {
	traces, err := output(tracesPath)
	if err != nil {
		return err
	}
	defer traces.Close()
	metrics, err := output(metricsPath)
	if err != nil {
		return err
	}
	defer metrics.Close()

	tp, mp, err := newProviders(traces, metrics)
	if err != nil {
		return err
	}
	defer func() {
		// After the pool's drain, so that the last spans and the final
		// counts are exported.
		flush, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = errors.Join(err, tp.Shutdown(flush), mp.Shutdown(flush))
	}()

	// One pool, two metric backends and a tracer.
	prom, err := bgprom.New("mail")
	if err != nil {
		return err
	}
	om, err := bgotel.NewMetrics("mail", bgotel.WithMeterProvider(mp))
	if err != nil {
		return err
	}
	tracing, err := bgotel.NewTracing("mail", bgotel.WithTracerProvider(tp))
	if err != nil {
		return err
	}
	pool, err := bgpool.New(4,
		bgpool.WithQueueSize(100),
		bgpool.WithObserver(prom.Observe),    // Prometheus' histograms
		bgpool.WithObserver(om.Observe),      // OpenTelemetry's histograms
		bgpool.WithTaskWrapper(tracing.Wrap), // a span per task
	)
	if err != nil {
		return err
	}
	prom.Watch(pool)
	om.Watch(pool)
	reg := prometheus.NewRegistry()
	if err := reg.Register(prom); err != nil {
		return err
	}

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	slog.Info("listening", "addr", ln.Addr().String())
	srv := &http.Server{Handler: handler(pool, reg, tp, mp), ReadHeaderTimeout: 5 * time.Second}
	return bgpool.Serve(ctx, srv, ln, pool, 10*time.Second)
}

// output opens path for writing, or returns standard output for "".
func output(path string) (io.WriteCloser, error) {
	if path == "" {
		return nopCloser{os.Stdout}, nil
	}
	return os.Create(path)
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// newProviders returns a TracerProvider and a MeterProvider that export to
// traces and metrics with the SDK's stdout exporters.
func newProviders(traces, metrics io.Writer) (*sdktrace.TracerProvider, *sdkmetric.MeterProvider, error) {
	spanExporter, err := stdouttrace.New(stdouttrace.WithWriter(traces))
	if err != nil {
		return nil, nil, err
	}
	metricExporter, err := stdoutmetric.New(stdoutmetric.WithWriter(metrics))
	if err != nil {
		return nil, nil, err
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(spanExporter))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(
		sdkmetric.NewPeriodicReader(metricExporter, sdkmetric.WithInterval(30*time.Second)),
	))
	return tp, mp, nil
}

// handler returns the service's routes: /metrics for Prometheus, and
// POST /signup, traced by otelhttp (which takes the caller's W3C
// traceparent header) and able to submit background tasks.
func handler(pool *bgpool.Pool, reg *prometheus.Registry, tp trace.TracerProvider, mp *sdkmetric.MeterProvider) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	signup := bgpool.Middleware(pool, bgpool.WithShedding(time.Second))(http.HandlerFunc(postSignup))
	mux.Handle("POST /signup", otelhttp.NewHandler(signup, "POST /signup",
		otelhttp.WithTracerProvider(tp),
		otelhttp.WithMeterProvider(mp),
		otelhttp.WithPropagators(propagation.TraceContext{}),
	))
	return mux
}

// welcomeArgs are the args of the welcome mail Job.
type welcomeArgs struct{ Email string }

// Kind names the Job: the span of each welcome mail is "mail welcome".
func (welcomeArgs) Kind() string { return "welcome" }

var welcome = bgpool.NewJob(sendWelcome)

// postSignup queues a welcome mail and answers 202 at once, or 503 when the
// pool has no room.
func postSignup(w http.ResponseWriter, r *http.Request) {
	email := r.FormValue("email")
	if email == "" {
		http.Error(w, "email is required", http.StatusBadRequest)
		return
	}
	err := welcome.Go(r, welcomeArgs{Email: email})
	if errors.Is(err, bgpool.ErrOverloaded) || errors.Is(err, bgpool.ErrClosed) {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "too busy, retry later", http.StatusServiceUnavailable)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusAccepted)
	fmt.Fprintf(w, "welcome mail to %s queued\n", email)
}

// sendWelcome stands in for an SMTP call. It runs in the task's span, which
// its context carries.
func sendWelcome(ctx context.Context, args welcomeArgs) error {
	select {
	case <-time.After(5 * time.Millisecond): // the SMTP round trip
	case <-ctx.Done():
		return ctx.Err()
	}
	trace.SpanFromContext(ctx).AddEvent("welcome mail sent")
	return nil
}
