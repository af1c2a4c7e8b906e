// Command load measures what bounding background work buys an HTTP service
// under overload.
//
// For every variant and offered rate it starts a copy of itself as a server
// on 127.0.0.1 (a separate process, so that the load generator's goroutines
// and memory do not count), drives it with vegeta at a constant rate for a
// fixed time, then stops the load and measures how long the background
// tasks take to drain. Each request's handler builds a payload and starts a
// background task that calls a slow downstream: the downstream serves at
// most -workers calls at once, each taking -task, so it drains
// workers/task tasks a second, and the default rates (R and 2R) both offer
// more than that.
//
// Variants:
//
//	none    the handler starts no task (the latency baseline)
//	go      an unbounded goroutine per request
//	block   bgpool with the Block policy; Submit waits for room
//	drop    bgpool with the Drop policy; excess tasks are discarded
//	reject  bgpool with the Reject policy; the handler answers 503
//	shed    bgpool.Middleware with WithShedding answers 503 with Retry-After,
//	        without running the handler, while the pool is full; the handler
//	        submits with bgpool.Go (Reject policy)
//
// It prints one table and, unless -out is empty, writes it as markdown
// (load.md), as an SVG chart of p99 latency and peak heap (load.svg), and
// every pass's raw figures as JSON (load-runs.json).
//
// Usage (inside benchmarks/):
//
//	go run ./load                 # one pass, about 80 seconds
//	go run ./load -count 3        # three passes, medians: the README's table
//	go run ./load -smoke          # a few seconds, no files: for CI
//	go run ./load -duration 10s -rate 2000 -out /tmp/load
package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/bgpool/bgpool"
)

// config is what both the driver and the server need to know.
type config struct {
	Variant  string
	Workers  int
	Task     time.Duration
	Payload  int
	Deadline time.Duration // how long the server waits for its tasks to drain
}

// serverResult is what a server reports when it stops.
type serverResult struct {
	PeakGoroutines int
	PeakHeap       uint64 // heap objects plus goroutine stacks, bytes
	Completed      uint64
	Dropped        uint64
	Rejected       uint64
	Abandoned      uint64
	Drain          time.Duration
}

// row is one line of the table.
type row struct {
	Variant  string
	Offered  int // requests per second
	Rate     float64
	P50, P99 time.Duration
	Max      time.Duration
	Non2xx   int
	Server   serverResult
}

var variants = []string{"none", "go", "block", "drop", "reject", "shed"}

func main() {
	log.SetFlags(0)
	log.SetPrefix("load: ")
	var (
		serve    = flag.String("serve", "", "run as the server for this variant (used by the driver)")
		duration = flag.Duration("duration", 5*time.Second, "how long to offer load, per variant and rate")
		rate     = flag.Int("rate", 1000, "offered rate R in requests per second; every variant also runs at 2R")
		workers  = flag.Int("workers", 16, "pool size, and the downstream's concurrency")
		task     = flag.Duration("task", 20*time.Millisecond, "how long one downstream call takes")
		payload  = flag.Int("payload", 4096, "bytes each request hands to its task")
		timeout  = flag.Duration("timeout", 2*time.Second, "client timeout per request")
		deadline = flag.Duration("drain", 15*time.Second, "how long a server waits for its tasks after the load stops")
		only     = flag.String("variants", strings.Join(variants, ","), "comma-separated variants to run")
		out      = flag.String("out", "results", "folder for load.md and load.svg; empty writes nothing")
		count    = flag.Int("count", 1, "passes over all variants; the table shows medians")
		smoke    = flag.Bool("smoke", false, "a run of a few seconds that writes no files, for CI")
	)
	flag.Parse()
	cfg := config{Variant: *serve, Workers: *workers, Task: *task, Payload: *payload, Deadline: *deadline}
	if *serve != "" {
		if err := runServer(cfg); err != nil {
			log.Fatal(err)
		}
		return
	}
	if *smoke {
		*duration, *rate, *out, *count, cfg.Deadline = 300*time.Millisecond, 1000, "", 1, 2*time.Second
	}
	if *count < 1 || *rate < 1 || *duration <= 0 || *workers < 1 || *task <= 0 {
		log.Fatal("-rate, -duration, -workers and -task must be positive")
	}
	vs := strings.Split(*only, ",")
	for _, v := range vs {
		if !slices.Contains(variants, v) {
			log.Fatalf("unknown variant %q; known: %s", v, strings.Join(variants, ", "))
		}
	}
	// Every pass runs every variant at both rates, so that a slow patch of
	// a noisy machine hits them all alike; the table shows each figure's
	// median over the passes.
	var all []row
	for pass := 1; pass <= *count; pass++ {
		for _, v := range vs {
			for _, r := range []int{*rate, 2 * *rate} {
				cfg.Variant = v
				res, err := drive(cfg, r, *duration, *timeout)
				if err != nil {
					log.Fatalf("%s at %d/s: %v", v, r, err)
				}
				all = append(all, res)
				fmt.Fprintf(os.Stderr, "pass %d/%d: %s at %d/s: p99 %s\n", pass, *count, v, r, ms(res.P99))
			}
		}
	}
	rows := medians(all)
	passes := "one pass"
	if *count > 1 {
		passes = fmt.Sprintf("median of %d passes", *count)
	}
	header := fmt.Sprintf("%d workers, downstream %v per call (drains %d tasks/s), %v per run, client timeout %v, GOMAXPROCS %d, %s",
		*workers, *task, int(float64(*workers)/task.Seconds()), *duration, *timeout, runtime.GOMAXPROCS(0), passes)
	fmt.Println(header)
	fmt.Print(table(rows))
	if *out == "" {
		return
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Fatal(err)
	}
	md := "<!-- written by go run ./load -->\n" + header + "\n\n" + table(rows)
	if err := os.WriteFile(filepath.Join(*out, "load.md"), []byte(md), 0o644); err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(*out, "load.svg"), []byte(chart(rows)), 0o644); err != nil {
		log.Fatal(err)
	}
	raw, err := json.MarshalIndent(all, "", "\t")
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(*out, "load-runs.json"), append(raw, '\n'), 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Fprintf(os.Stderr, "wrote %s and %s\n", filepath.Join(*out, "load.md"), filepath.Join(*out, "load.svg"))
}

// drive starts a server for cfg.Variant, offers it rate requests a second
// for duration, stops it, and returns the row.
func drive(cfg config, rate int, duration, timeout time.Duration) (row, error) {
	self, err := os.Executable()
	if err != nil {
		return row{}, err
	}
	cmd := exec.Command(self,
		"-serve", cfg.Variant,
		"-workers", strconv.Itoa(cfg.Workers),
		"-task", cfg.Task.String(),
		"-payload", strconv.Itoa(cfg.Payload),
		"-drain", cfg.Deadline.String())
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return row{}, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return row{}, err
	}
	if err := cmd.Start(); err != nil {
		return row{}, err
	}
	// Whatever happens, the server goes away with this call.
	defer func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(cfg.Deadline + 10*time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() {
		return row{}, fmt.Errorf("server did not start: %v", lines.Err())
	}
	addr := lines.Text()
	if host, _, err := net.SplitHostPort(addr); err != nil || host != "127.0.0.1" {
		return row{}, fmt.Errorf("server address %q is not on 127.0.0.1", addr)
	}

	atk := vegeta.NewAttacker(vegeta.Timeout(timeout), vegeta.KeepAlive(true))
	target := vegeta.NewStaticTargeter(vegeta.Target{Method: "GET", URL: "http://" + addr + "/work"})
	var m vegeta.Metrics
	for res := range atk.Attack(target, vegeta.Rate{Freq: rate, Per: time.Second}, duration, cfg.Variant) {
		m.Add(res)
	}
	m.Close()

	stdin.Close() // tells the server to stop and drain
	var sr serverResult
	if !lines.Scan() {
		return row{}, fmt.Errorf("server sent no result: %v", lines.Err())
	}
	if err := json.Unmarshal(lines.Bytes(), &sr); err != nil {
		return row{}, fmt.Errorf("server result: %v", err)
	}
	non2xx := 0
	for code, n := range m.StatusCodes {
		if !strings.HasPrefix(code, "2") {
			non2xx += n
		}
	}
	return row{
		Variant: cfg.Variant,
		Offered: rate,
		Rate:    m.Rate,
		P50:     m.Latencies.P50,
		P99:     m.Latencies.P99,
		Max:     m.Latencies.Max,
		Non2xx:  non2xx,
		Server:  sr,
	}, nil
}

// runServer serves cfg.Variant on 127.0.0.1 until its stdin closes, then
// drains its background tasks and writes a serverResult as JSON to stdout.
func runServer(cfg config) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	s, err := newService(cfg)
	if err != nil {
		return err
	}
	smp := startSampler()
	srv := &http.Server{Handler: s.handler, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	fmt.Println(ln.Addr().String())

	_, _ = io.Copy(io.Discard, os.Stdin) // until the driver closes stdin
	// The load is over: drain the background tasks, and meanwhile close the
	// HTTP server. Drain time is the tasks' alone; http.Server.Shutdown
	// would add up to 5s for a connection the client opened but never used.
	stopped := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			_ = srv.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Deadline)
	defer cancel()
	res := s.drain(ctx)
	res.Drain = time.Since(stopped)
	res.PeakGoroutines, res.PeakHeap = smp.stop()
	return json.NewEncoder(os.Stdout).Encode(res)
}

// service is a variant's handler and its background work.
type service struct {
	handler http.Handler
	drain   func(ctx context.Context) serverResult
}

func newService(cfg config) (*service, error) {
	// The downstream serves at most cfg.Workers calls at once.
	downstream := make(chan struct{}, cfg.Workers)
	call := func(payload []byte) {
		downstream <- struct{}{}
		time.Sleep(cfg.Task)
		sink.Add(int64(payload[len(payload)-1]))
		<-downstream
	}
	newPayload := func() []byte {
		b := make([]byte, cfg.Payload)
		b[len(b)-1] = 1
		return b
	}
	accepted := func(w http.ResponseWriter) { w.WriteHeader(http.StatusAccepted) }
	overloaded := func(w http.ResponseWriter) {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
	}

	switch cfg.Variant {
	case "none":
		return &service{
			handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				sink.Add(int64(newPayload()[cfg.Payload-1]))
				accepted(w)
			}),
			drain: func(context.Context) serverResult { return serverResult{} },
		}, nil

	case "go":
		var wg sync.WaitGroup
		var completed atomic.Uint64
		return &service{
			handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				payload := newPayload()
				started.Add(1)
				wg.Go(func() { call(payload); completed.Add(1) })
				accepted(w)
			}),
			drain: func(ctx context.Context) serverResult {
				done := make(chan struct{})
				go func() { wg.Wait(); close(done) }()
				select {
				case <-done: // every goroutine finished
				case <-ctx.Done(): // the deadline passed; the rest are abandoned
				}
				var res serverResult
				res.Completed = completed.Load()
				// Started goroutines are counted in wg only; what did not
				// complete by the deadline is abandoned.
				res.Abandoned = uint64(started.Load()) - res.Completed
				return res
			},
		}, nil

	case "block", "drop", "reject", "shed":
		policy := map[string]bgpool.Policy{
			"block": bgpool.Block, "drop": bgpool.Drop, "reject": bgpool.Reject, "shed": bgpool.Reject,
		}[cfg.Variant]
		p, err := bgpool.New(cfg.Workers, bgpool.WithPolicy(policy))
		if err != nil {
			return nil, err
		}
		task := func(payload []byte) bgpool.Task {
			return func(context.Context) error { call(payload); return nil }
		}
		var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := p.Submit(r.Context(), task(newPayload())); err != nil {
				overloaded(w)
				return
			}
			accepted(w)
		})
		if cfg.Variant == "shed" {
			// The middleware answers 503 while the pool is full; a request
			// that passed its check may still lose the race for room, which
			// the Reject policy turns into a 503 from the handler.
			h = bgpool.Middleware(p, bgpool.WithShedding(time.Second))(http.HandlerFunc(
				func(w http.ResponseWriter, r *http.Request) {
					if err := bgpool.Go(r, task(newPayload())); err != nil {
						overloaded(w)
						return
					}
					accepted(w)
				}))
		}
		return &service{
			handler: h,
			drain: func(ctx context.Context) serverResult {
				_ = p.Shutdown(ctx)
				st := p.Stats()
				return serverResult{
					Completed: st.Completed,
					Dropped:   st.Dropped,
					Rejected:  st.Rejected,
					Abandoned: st.Abandoned,
				}
			},
		}, nil
	}
	return nil, fmt.Errorf("unknown variant %q", cfg.Variant)
}

// sink keeps the payloads observable, so that the compiler cannot drop them.
var sink atomic.Int64

// started counts the goroutines the go variant started.
var started atomic.Int64

// A sampler polls the goroutine count and the heap (objects plus goroutine
// stacks) every millisecond and keeps their peaks.
type sampler struct {
	done     chan struct{}
	finished chan struct{}
	peakG    int
	peakHeap uint64
}

func startSampler() *sampler {
	s := &sampler{done: make(chan struct{}), finished: make(chan struct{})}
	go func() {
		defer close(s.finished)
		samples := []metrics.Sample{
			{Name: "/memory/classes/heap/objects:bytes"},
			{Name: "/memory/classes/heap/stacks:bytes"},
		}
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(samples)
			s.peakHeap = max(s.peakHeap, samples[0].Value.Uint64()+samples[1].Value.Uint64())
			s.peakG = max(s.peakG, runtime.NumGoroutine())
			select {
			case <-t.C: // next sample
			case <-s.done: // the server stopped
				return
			}
		}
	}()
	return s
}

func (s *sampler) stop() (goroutines int, heap uint64) {
	close(s.done)
	<-s.finished
	return s.peakG, s.peakHeap
}

// medians folds the runs of each variant and rate into one row whose every
// figure is the median of that figure over the runs, in first-seen order.
func medians(all []row) []row {
	type key struct {
		v string
		r int
	}
	var order []key
	groups := map[key][]row{}
	for _, r := range all {
		k := key{r.Variant, r.Offered}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	var out []row
	for _, k := range order {
		g := groups[k]
		out = append(out, row{
			Variant: k.v,
			Offered: k.r,
			Rate:    median(g, func(r row) float64 { return r.Rate }),
			P50:     median(g, func(r row) time.Duration { return r.P50 }),
			P99:     median(g, func(r row) time.Duration { return r.P99 }),
			Max:     median(g, func(r row) time.Duration { return r.Max }),
			Non2xx:  median(g, func(r row) int { return r.Non2xx }),
			Server: serverResult{
				PeakGoroutines: median(g, func(r row) int { return r.Server.PeakGoroutines }),
				PeakHeap:       median(g, func(r row) uint64 { return r.Server.PeakHeap }),
				Completed:      median(g, func(r row) uint64 { return r.Server.Completed }),
				Dropped:        median(g, func(r row) uint64 { return r.Server.Dropped }),
				Rejected:       median(g, func(r row) uint64 { return r.Server.Rejected }),
				Abandoned:      median(g, func(r row) uint64 { return r.Server.Abandoned }),
				Drain:          median(g, func(r row) time.Duration { return r.Server.Drain }),
			},
		})
	}
	return out
}

// median returns the median of f over rows; of an even count, the lower
// middle value, so that it is always a value that was measured.
func median[T cmp.Ordered](rows []row, f func(row) T) T {
	vals := make([]T, len(rows))
	for i, r := range rows {
		vals[i] = f(r)
	}
	slices.Sort(vals)
	return vals[(len(vals)-1)/2]
}

// table formats rows as a markdown table.
func table(rows []row) string {
	var b strings.Builder
	b.WriteString("| variant | offered/s | req/s | p50 | p99 | max | non-2xx | peak goroutines | peak heap | completed | dropped | rejected | abandoned | drain |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %d | %.0f | %s | %s | %s | %d | %d | %s | %d | %d | %d | %d | %s |\n",
			r.Variant, r.Offered, r.Rate, ms(r.P50), ms(r.P99), ms(r.Max), r.Non2xx,
			r.Server.PeakGoroutines, mib(r.Server.PeakHeap),
			r.Server.Completed, r.Server.Dropped, r.Server.Rejected, r.Server.Abandoned, ms(r.Server.Drain))
	}
	return b.String()
}

func ms(d time.Duration) string {
	switch {
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	case d < time.Second:
		return fmt.Sprintf("%.0fms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

func mib(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// chart draws two grouped bar charts, p99 latency and peak heap per variant
// at each offered rate, as an SVG document. Both use a logarithmic scale,
// since the unbounded variants are orders of magnitude above the others;
// every bar is labelled with its value.
func chart(rows []row) string {
	var vs []string
	var rates []int
	for _, r := range rows {
		if !slices.Contains(vs, r.Variant) {
			vs = append(vs, r.Variant)
		}
		if !slices.Contains(rates, r.Offered) {
			rates = append(rates, r.Offered)
		}
	}
	get := func(v string, rate int) (row, bool) {
		for _, r := range rows {
			if r.Variant == v && r.Offered == rate {
				return r, true
			}
		}
		return row{}, false
	}
	const (
		panelW, panelH = 560, 300
		left, top      = 70, 50
		plotW, plotH   = panelW - left - 20, panelH - top - 60
	)
	colors := []string{"#4e79a7", "#f28e2b", "#59a14f", "#e15759"}
	var b strings.Builder
	width := 2 * panelW
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n",
		width, panelH+30, width, panelH+30)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, panelH+30)
	panel := func(x0 int, title, unit string, value func(row) float64, label func(row) string) {
		lo, hi := 0.0, 0.0
		for _, r := range rows {
			v := value(r)
			if v <= 0 {
				continue
			}
			if lo == 0 || v < lo {
				lo = v
			}
			hi = max(hi, v)
		}
		if lo == 0 {
			lo, hi = 1, 10
		}
		// Decades that cover the data.
		dlo, dhi := floorPow10(lo), ceilPow10(hi)
		if dhi <= dlo {
			dhi = dlo * 10
		}
		y := func(v float64) float64 {
			v = min(max(v, dlo), dhi)
			return top + plotH - plotH*(log10(v)-log10(dlo))/(log10(dhi)-log10(dlo))
		}
		fmt.Fprintf(&b, `<text x="%d" y="22" font-size="14" font-weight="bold">%s</text>`+"\n", x0+left, esc(title))
		fmt.Fprintf(&b, `<text x="%d" y="38" fill="#555">%s, log scale</text>`+"\n", x0+left, esc(unit))
		for d := dlo; d <= dhi*1.0001; d *= 10 {
			yy := y(d)
			fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", x0+left, yy, x0+left+plotW, yy)
			fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" fill="#555">%s</text>`+"\n", x0+left-6, yy+4, esc(tick(d)))
		}
		groupW := float64(plotW) / float64(len(vs))
		barW := groupW * 0.8 / float64(len(rates))
		for i, v := range vs {
			gx := float64(x0+left) + groupW*float64(i) + groupW*0.1
			for j, rate := range rates {
				r, ok := get(v, rate)
				if !ok {
					continue
				}
				val := value(r)
				bx := gx + barW*float64(j)
				by := y(max(val, dlo))
				fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s at %d/s: %s</title></rect>`+"\n",
					bx, by, barW-1, float64(top+plotH)-by, colors[j%len(colors)], esc(v), rate, esc(label(r)))
				fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="9">%s</text>`+"\n",
					bx+barW/2, by-3, esc(label(r)))
			}
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", gx+groupW*0.4, top+plotH+16, esc(v))
		}
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>`+"\n", x0+left, top+plotH, x0+left+plotW, top+plotH)
		for j, rate := range rates {
			lx := x0 + left + 150*j
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/>`+"\n", lx, top+plotH+32, colors[j%len(colors)])
			fmt.Fprintf(&b, `<text x="%d" y="%d">offered %d req/s</text>`+"\n", lx+16, top+plotH+42, rate)
		}
	}
	panel(0, "Response latency p99", "milliseconds",
		func(r row) float64 { return float64(r.P99) / 1e6 },
		func(r row) string { return ms(r.P99) })
	panel(panelW, "Peak heap (objects + stacks)", "MiB",
		func(r row) float64 { return float64(r.Server.PeakHeap) / (1 << 20) },
		func(r row) string { return fmt.Sprintf("%.1f", float64(r.Server.PeakHeap)/(1<<20)) })
	b.WriteString("</svg>\n")
	return b.String()
}

func log10(v float64) float64      { return math.Log10(v) }
func floorPow10(v float64) float64 { return math.Pow(10, math.Floor(math.Log10(v))) }
func ceilPow10(v float64) float64  { return math.Pow(10, math.Ceil(math.Log10(v))) }

func tick(v float64) string {
	if v >= 1 {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

func esc(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}
