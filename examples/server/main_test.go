package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/bgpool/bgpool"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreCurrent())
}

// lineWriter sends each complete line written to it to lines.
type lineWriter struct {
	mu    sync.Mutex
	buf   []byte
	lines chan string
}

func (w *lineWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, b...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		w.lines <- string(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
}

// syncBuffer is a bytes.Buffer safe for the writes of exec's copying
// goroutine and the test's reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// server is the example server running as a child process.
type server struct {
	cmd    *exec.Cmd
	addr   string
	lines  chan string   // stdout, line by line
	stderr *syncBuffer   // the server's log
	exited chan struct{} // closed when the process has exited
	err    error         // cmd.Wait's result, set before exited is closed
}

// build compiles the example server into dir and returns the binary's path.
func build(t *testing.T, dir string) string {
	t.Helper()
	goBin, err := exec.LookPath("go") // go test puts GOROOT/bin first in PATH
	require.NoError(t, err)
	bin := filepath.Join(dir, "server")
	out, err := exec.Command(goBin, "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return bin
}

// start runs the binary with args on a free loopback port and waits until it
// listens. The test's cleanup kills it if it is still running.
func start(t *testing.T, bin string, args ...string) *server {
	t.Helper()
	s := &server{
		lines:  make(chan string, 100),
		stderr: &syncBuffer{},
		exited: make(chan struct{}),
	}
	s.cmd = exec.Command(bin, append([]string{"-addr", "127.0.0.1:0"}, args...)...)
	s.cmd.Stdout = &lineWriter{lines: s.lines}
	s.cmd.Stderr = s.stderr
	require.NoError(t, s.cmd.Start())
	go func() {
		s.err = s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-s.exited:
		default:
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
		if t.Failed() {
			t.Logf("server log:\n%s", s.stderr)
		}
	})

	line := s.line(t, 30*time.Second)
	addr, ok := strings.CutPrefix(line, "listening on http://")
	require.True(t, ok, "first line: %q", line)
	s.addr = addr
	return s
}

// line returns the next line the server prints on stdout.
func (s *server) line(t *testing.T, timeout time.Duration) string {
	t.Helper()
	select {
	case l := <-s.lines:
		return l
	case <-s.exited:
		select {
		case l := <-s.lines:
			return l
		default:
		}
		t.Fatalf("the server exited (%v) without printing a line; log:\n%s", s.err, s.stderr)
	case <-time.After(timeout):
		t.Fatalf("the server printed nothing for %v", timeout)
	}
	return ""
}

// postJobs starts n jobs of duration d and checks each was accepted.
func (s *server) postJobs(t *testing.T, n int, d string) {
	t.Helper()
	for range n {
		resp, err := http.Post("http://"+s.addr+"/jobs?duration="+d, "", nil)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusAccepted, resp.StatusCode)
	}
	http.DefaultClient.CloseIdleConnections()
}

// terminate sends SIGTERM, waits until new connections are refused (which
// must happen while the server is still draining), and then until the
// process exits. It returns how long the exit took from SIGTERM, and the
// final Stats the server printed.
func (s *server) terminate(t *testing.T, grace time.Duration, checkRefused bool) (time.Duration, bgpool.Stats) {
	t.Helper()
	begin := time.Now()
	require.NoError(t, s.cmd.Process.Signal(syscall.SIGTERM))
	if checkRefused {
		for {
			c, err := net.DialTimeout("tcp", s.addr, time.Second)
			if err != nil {
				// Refused once the listener is closed; reset if the dial was
				// still in the listen backlog when it closed.
				assert.True(t, errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET), "dial: %v", err)
				break
			}
			c.Close()
			select {
			case <-s.exited:
				t.Fatal("the server exited before it refused connections")
			case <-time.After(10 * time.Millisecond):
			}
		}
		select {
		case <-s.exited:
			t.Fatal("the drain was over before connections were refused; make the jobs longer")
		default:
		}
	}
	select {
	case <-s.exited:
	case <-time.After(grace + 10*time.Second):
		t.Fatalf("the server did not exit within %v of SIGTERM", grace+10*time.Second)
	}
	elapsed := time.Since(begin)

	line := s.line(t, time.Second)
	js, ok := strings.CutPrefix(line, "stats: ")
	require.True(t, ok, "last line: %q", line)
	var st bgpool.Stats
	require.NoError(t, json.Unmarshal([]byte(js), &st))
	return elapsed, st
}

func TestServerBinaryShutsDownGracefullyOnSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the example server")
	}
	bin := build(t, t.TempDir())

	t.Run("finishes every job that fits within grace and exits 0", func(t *testing.T) {
		const grace = 3 * time.Second
		// 4 workers, 6 one-second jobs: two rounds, about 2s of drain.
		s := start(t, bin, "-grace", grace.String(), "-workers", "4")
		s.postJobs(t, 6, "1s")

		elapsed, st := s.terminate(t, grace, true)
		assert.NoError(t, s.err, "exit status")
		assert.Less(t, elapsed, grace+time.Second, "exit within grace (plus process exit)")
		assert.Equal(t, uint64(6), st.Submitted)
		assert.Equal(t, uint64(6), st.Completed, "every job that fit within grace completed")
		assert.Zero(t, st.Abandoned)
		assert.Contains(t, s.stderr.String(), "shutting down")
	})

	t.Run("abandons jobs longer than grace, counts them, and exits on time", func(t *testing.T) {
		const grace = time.Second
		s := start(t, bin, "-grace", grace.String(), "-workers", "4")
		s.postJobs(t, 3, "1m")

		elapsed, st := s.terminate(t, grace, true)
		var exit *exec.ExitError
		require.ErrorAs(t, s.err, &exit)
		assert.Equal(t, 1, exit.ExitCode())
		assert.GreaterOrEqual(t, elapsed, grace)
		assert.Less(t, elapsed, grace+time.Second, "exit on time")
		assert.Equal(t, uint64(3), st.Abandoned)
		assert.Zero(t, st.Completed)
		assert.Contains(t, s.stderr.String(), "abandoned 3 tasks")
	})
}

func TestServerBinaryExitsWithTheFlagError(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the example server")
	}
	bin := build(t, t.TempDir())
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no workers", []string{"-workers", "0"}, "-workers must be at least 1"},
		{"a negative queue", []string{"-queue", "-1"}, "-queue must not be negative"},
		{"a negative grace", []string{"-grace", "-1s"}, "-grace must not be negative"},
		{"a negative ready delay", []string{"-ready-delay", "-1s"}, "-ready-delay must not be negative"},
		{"a ready delay longer than grace", []string{"-grace", "2s", "-ready-delay", "3s"}, "-ready-delay 3s is longer than -grace 2s"},
		{"an unknown flag", []string{"-bogus"}, "flag provided but not defined: -bogus"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			cmd := exec.Command(bin, append([]string{"-addr", "127.0.0.1:0"}, tt.args...)...)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()

			var exit *exec.ExitError
			require.ErrorAs(t, err, &exit, "stderr:\n%s", &stderr)
			assert.Equal(t, 2, exit.ExitCode(), "exit status")
			assert.Contains(t, stderr.String(), tt.want)
			assert.Contains(t, stderr.String(), "Usage of ")
			assert.NotContains(t, stderr.String(), "shutting down")
			assert.Empty(t, stdout.String(), "nothing served, no stats printed")
		})
	}
}

func TestServerBinaryDoesNotSayShuttingDownWhenItCannotListen(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the example server")
	}
	bin := build(t, t.TempDir())
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()

	// Before the fix the line came from a goroutine racing the exit, so
	// try a few times.
	for range 5 {
		var stderr bytes.Buffer
		cmd := exec.Command(bin, "-addr", taken.Addr().String())
		cmd.Stderr = &stderr
		err := cmd.Run()

		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit)
		assert.Equal(t, 1, exit.ExitCode(), "exit status")
		assert.Contains(t, stderr.String(), "address already in use")
		assert.NotContains(t, stderr.String(), "shutting down", "no signal came")
	}
}
