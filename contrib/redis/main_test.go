package bgredis_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/bgpool/bgpool"
)

func TestMain(m *testing.M) {
	// go-redis logs each failed dial; these tests fail dials on purpose, and
	// check what the Limiter reports instead. A child process of
	// TestGoRedisLoggerIsLeftAlone keeps go-redis' logger, to show its lines.
	if os.Getenv(goRedisLogEnv) == "" {
		redis.SetLogger(quietRedis{})
	}
	goleak.VerifyTestMain(m, goleak.IgnoreCurrent())
}

// quietRedis is a go-redis logger that drops everything.
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

// sharedAddr is the Redis that .ci/run starts and the go-svc machines run.
const sharedAddr = "127.0.0.1:6379"

// sharedRedis returns a client of the Redis at sharedAddr, closed when the
// test ends. The test fails, and does not skip, when that Redis does not
// answer: CI must not pass without it.
func sharedRedis(t testing.TB) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: sharedAddr})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	require.NoError(t, rdb.Ping(ctx).Err(),
		"these tests need Redis at %s; start it with "+
			`redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no`+
			" (bash .ci/run does)", sharedAddr)
	return rdb
}

// uniqueKey returns a rate-limit key that no other test, and no other run of
// this one, uses.
func uniqueKey(t testing.TB) string {
	return fmt.Sprintf("bgredis-test:%s:%d:%d", t.Name(), os.Getpid(), time.Now().UnixNano())
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago, and
// is closed now.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	return port
}

// redisServer is a redis-server process of the test's own, on loopback,
// keeping nothing on disk, to stop and kill under a Limiter.
type redisServer struct {
	t        testing.TB
	port     int
	password string // "" when the server requires none
	cmd      *exec.Cmd
}

// startRedis starts redis-server on port and waits until it answers. It is
// killed when the test ends, if the test has not killed it.
func startRedis(t testing.TB, port int) *redisServer {
	t.Helper()
	return startRedisWithPassword(t, port, "")
}

// startRedisWithPassword starts redis-server as startRedis does; a password
// other than "" is the server's requirepass, so that clients must AUTH.
func startRedisWithPassword(t testing.TB, port int, password string) *redisServer {
	t.Helper()
	path, err := exec.LookPath("redis-server")
	require.NoError(t, err, "these tests start redis-server of their own: install it (apt-get install -y redis-server; bash .ci/run does)")
	args := []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", t.TempDir()}
	if password != "" {
		args = append(args, "--requirepass", password)
	}
	cmd := exec.Command(path, args...)
	require.NoError(t, cmd.Start())
	s := &redisServer{t: t, port: port, password: password, cmd: cmd}
	t.Cleanup(s.kill)

	deadline := time.Now().Add(5 * time.Second)
	for !s.answers() {
		require.True(t, time.Now().Before(deadline), "redis-server on port %d did not answer PING within 5s", port)
		time.Sleep(20 * time.Millisecond)
	}
	return s
}

func (s *redisServer) addr() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

// answers reports whether the server replies +PONG to an inline PING, after
// an AUTH if it requires a password.
func (s *redisServer) answers() bool {
	conn, err := net.DialTimeout("tcp", s.addr(), 200*time.Millisecond)
	if err != nil {
		return false
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(200 * time.Millisecond))
	r := bufio.NewReader(conn)
	if s.password != "" {
		if _, err := conn.Write([]byte("AUTH " + s.password + "\r\n")); err != nil {
			return false
		}
		if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "+OK") {
			return false
		}
	}
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := r.ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}

// kill ends the server with SIGKILL, as a crash or an OOM kill would, and
// reaps it. Killing it twice is harmless.
func (s *redisServer) kill() {
	if s.cmd.ProcessState != nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGCONT) // a stopped process dies only once continued
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
}

// pause stops the server with SIGSTOP: connections stay open and nothing
// answers, as with a server stuck or a network that drops packets.
func (s *redisServer) pause() {
	s.t.Helper()
	require.NoError(s.t, s.cmd.Process.Signal(syscall.SIGSTOP))
}

// resume continues a paused server.
func (s *redisServer) resume() {
	s.t.Helper()
	require.NoError(s.t, s.cmd.Process.Signal(syscall.SIGCONT))
}

// logRecorder is a slog.Handler that keeps the messages logged to it, each
// as its level, its message and its attributes.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	msg := rec.Level.String() + " " + rec.Message
	rec.Attrs(func(a slog.Attr) bool {
		msg += " " + a.String()
		return true
	})
	r.msgs = append(r.msgs, msg)
	return nil
}

// String returns the messages logged so far, one a line.
func (r *logRecorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.msgs, "\n")
}

// count returns how many messages logged so far contain substr.
func (r *logRecorder) count(substr string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.msgs {
		if strings.Contains(m, substr) {
			n++
		}
	}
	return n
}

// The messages a Limiter logs when Redis goes down and when it comes back.
const (
	logDown = "deciding without Redis"
	logBack = "Redis answers again"
)

// newPool returns a pool of size workers limited by lim, with a quiet error
// handler, and shuts it down when the test ends if the test has not.
func newPool(t testing.TB, size int, lim bgpool.Limiter, opts ...bgpool.Option) *bgpool.Pool {
	t.Helper()
	opts = append([]bgpool.Option{
		bgpool.WithLimiter(lim),
		bgpool.WithErrorHandler(func(context.Context, error) {}),
	}, opts...)
	p, err := bgpool.New(size, opts...)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
	})
	return p
}
