package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreCurrent())
}

// The caller's trace context, as a W3C traceparent header.
const (
	callerTraceID   = "0af7651916cd43dd8448eb211c80319c"
	callerParent    = "00-" + callerTraceID + "-b7ad6b7169203331-01"
	zeroTraceID     = "00000000000000000000000000000000"
	listenTimeout   = 60 * time.Second
	scrapeAttempts  = 200
	shutdownTimeout = 30 * time.Second
)

// jsonSpan is the part of a span, as stdouttrace writes it, that the test
// reads.
type jsonSpan struct {
	Name        string
	SpanContext struct{ TraceID, SpanID string }
	Parent      struct{ TraceID, SpanID string }
	Links       []struct {
		SpanContext struct{ TraceID, SpanID string }
	}
	Attributes []struct {
		Key   string
		Value struct{ Value any }
	}
}

func (s jsonSpan) attr(key string) any {
	for _, a := range s.Attributes {
		if a.Key == key {
			return a.Value.Value
		}
	}
	return nil
}

// jsonMetrics is the part of a metrics export, as stdoutmetric writes it,
// that the test reads.
type jsonMetrics struct {
	ScopeMetrics []struct {
		Scope   struct{ Name string }
		Metrics []struct {
			Name string
			Data struct {
				DataPoints []struct {
					Attributes []struct {
						Key   string
						Value struct{ Value any }
					}
					Value float64 // a sum's
					Count uint64  // a histogram's
				}
			}
		}
	}
}

func TestServiceExportsPrometheusMetricsAndSpans(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "telemetry")
	build := exec.Command("go", "build", "-o", bin, ".")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build: %s", out)

	tracesPath, metricsPath := filepath.Join(dir, "traces.jsonl"), filepath.Join(dir, "metrics.jsonl")
	cmd := exec.Command(bin, "-addr", "127.0.0.1:0", "-traces", tracesPath, "-metrics", metricsPath)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	// The service logs the address it listens on; the rest of its log is
	// kept for the failure messages.
	addrCh := make(chan string, 1)
	logCh := make(chan string, 1)
	go func() {
		var log strings.Builder
		re := regexp.MustCompile(`addr=(127\.0\.0\.1:\d+)`)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				addrCh <- m[1]
			}
		}
		logCh <- log.String()
		exited <- cmd.Wait()
	}()
	var base string
	select {
	case addr := <-addrCh:
		base = "http://" + addr
	case log := <-logCh:
		require.FailNow(t, "the service exited before it listened", "its log:\n%s", log)
	case <-time.After(listenTimeout):
		require.FailNow(t, "the service did not log its address in time")
	}

	req, err := http.NewRequest(http.MethodPost, base+"/signup?email=ada@example.com", nil)
	require.NoError(t, err)
	req.Header.Set("traceparent", callerParent)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "%s", body)

	// The task runs after the response: scrape until Prometheus has seen
	// it complete.
	var metrics string
	for range scrapeAttempts {
		metrics = scrape(t, base)
		if strings.Contains(metrics, `bgpool_tasks_total{outcome="completed",pool="mail"} 1`) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, want := range []string{
		`bgpool_workers{pool="mail"} 4`,
		`bgpool_queue_capacity{pool="mail"} 100`,
		`bgpool_tasks_total{outcome="completed",pool="mail"} 1`,
		`bgpool_tasks_total{outcome="failed",pool="mail"} 0`,
		`bgpool_queue_wait_seconds_count{pool="mail"} 1`,
		`bgpool_task_duration_seconds_count{outcome="completed",pool="mail"} 1`,
	} {
		assert.Contains(t, metrics, want)
	}

	// SIGTERM drains the pool and flushes the spans and the last metrics.
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-exited:
		require.NoError(t, err, "the service exits cleanly on SIGTERM; its log:\n%s", <-logCh)
	case <-time.After(shutdownTimeout):
		require.FailNow(t, "the service did not stop after SIGTERM")
	}

	spans := readSpans(t, tracesPath)
	server, ok := spans["POST /signup"]
	require.True(t, ok, "otelhttp's server span was exported; spans: %v", spans)
	assert.Equal(t, callerTraceID, server.SpanContext.TraceID, "the request continues the caller's trace")
	task, ok := spans["mail welcome"]
	require.True(t, ok, "the task's span was exported; spans: %v", spans)
	assert.Equal(t, zeroTraceID, task.Parent.TraceID, "the task's span has no parent")
	assert.NotEqual(t, callerTraceID, task.SpanContext.TraceID, "the task's span is the root of a trace of its own")
	require.Len(t, task.Links, 1)
	assert.Equal(t, server.SpanContext, task.Links[0].SpanContext, "linked to the request's span")
	assert.Equal(t, "mail", task.attr("bgpool.pool.name"))
	assert.Equal(t, "welcome", task.attr("bgpool.job.kind"))
	assert.Equal(t, "completed", task.attr("bgpool.task.outcome"))

	tasks, durations := otelFigures(t, metricsPath)
	completed, ok := tasks["completed"]
	require.True(t, ok, "bgpool.tasks{bgpool.task.outcome=completed} was exported")
	assert.InDelta(t, 1, completed, 0, "the OpenTelemetry count agrees with Prometheus'")
	assert.Equal(t, uint64(1), durations["completed"], "both observers were called: OpenTelemetry's histogram has the task too")
}

// scrape returns the body of GET /metrics.
func scrape(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, resp.Body.Close())
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	return string(body)
}

// readSpans decodes the spans in path, by name.
func readSpans(t *testing.T, path string) map[string]jsonSpan {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	spans := map[string]jsonSpan{}
	dec := json.NewDecoder(f)
	for {
		var s jsonSpan
		err := dec.Decode(&s)
		if errors.Is(err, io.EOF) {
			return spans
		}
		require.NoError(t, err)
		spans[s.Name] = s
	}
}

// otelFigures returns, from the last export in path, the values of
// bgpool.tasks and the counts of bgpool.task.duration, by outcome.
func otelFigures(t *testing.T, path string) (tasks map[string]float64, durations map[string]uint64) {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	tasks, durations = map[string]float64{}, map[string]uint64{}
	dec := json.NewDecoder(f)
	for {
		var rm jsonMetrics
		err := dec.Decode(&rm)
		if errors.Is(err, io.EOF) {
			return tasks, durations
		}
		require.NoError(t, err)
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				for _, dp := range m.Data.DataPoints {
					for _, a := range dp.Attributes {
						if a.Key != "bgpool.task.outcome" {
							continue
						}
						switch m.Name {
						case "bgpool.tasks":
							tasks[a.Value.Value.(string)] = dp.Value
						case "bgpool.task.duration":
							durations[a.Value.Value.(string)] = dp.Count
						}
					}
				}
			}
		}
	}
}
