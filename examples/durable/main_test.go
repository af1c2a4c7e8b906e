package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/bgpool/bgpool"
)

const testDB = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "durable-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "durable")
	goleak.VerifyTestMain(removing{m, dir}, goleak.IgnoreCurrent())
}

// removing runs the tests, then removes dir (the built binary's).
type removing struct {
	m   *testing.M
	dir string
}

func (r removing) Run() int {
	defer os.RemoveAll(r.dir)
	return r.m.Run()
}

// testSchema makes a schema of its own for t and returns the database URL
// that uses it (search_path) and a pool on it; the schema, with every table
// the example creates in it, is dropped when t ends.
func testSchema(t *testing.T) (string, *pgxpool.Pool) {
	t.Helper()
	ctx := context.Background()
	admin, err := pgxpool.New(ctx, testDB)
	require.NoError(t, err)
	require.NoError(t, admin.Ping(ctx), "this test needs PostgreSQL at 127.0.0.1:5432 (database test); it never skips")
	schema := fmt.Sprintf("durable_test_%x", rand.Uint64())
	_, err = admin.Exec(ctx, "CREATE SCHEMA "+schema)
	require.NoError(t, err)
	dbURL := testDB + "&search_path=" + schema
	db, err := pgxpool.New(ctx, dbURL)
	require.NoError(t, err)
	t.Cleanup(func() {
		db.Close()
		_, err := admin.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
		assert.NoError(t, err, "drop the test's schema")
		admin.Close()
	})
	return dbURL, db
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds the example once for the test binary's run, into a
// directory that TestMain removes.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		build := exec.Command("go", "build", "-o", binPath, ".")
		build.Stderr = os.Stderr
		buildErr = build.Run()
	})
	require.NoError(t, buildErr, "go build")
	return binPath
}

// proc is a running durable process and its output.
type proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  strings.Builder
	done chan error // Wait's result
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// start runs the example with args; the process is killed when t ends if
// it is still running.
func start(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(binary(t), args...), done: make(chan error, 1)}
	pr, pw := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	require.NoError(t, p.cmd.Start())
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		s := bufio.NewScanner(pr)
		for s.Scan() {
			p.mu.Lock()
			p.out.WriteString(s.Text() + "\n")
			p.mu.Unlock()
		}
	}()
	go func() {
		err := p.cmd.Wait()
		_ = pw.Close()
		<-copied
		p.done <- err
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// stop sends sig and waits for the exit.
func (p *proc) stop(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(sig))
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup
		return err
	case <-time.After(15 * time.Second):
		t.Fatalf("no exit within 15s of %v; output:\n%s", sig, p.output())
		return nil
	}
}

// freeAddr returns a free 127.0.0.1 address.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// httpClient opens a connection per request, so that none is left open for
// goleak to find when the tests end.
var httpClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}

// post signs email up at the web process on addr.
func post(addr, email string) (int, string, error) {
	resp, err := httpClient.Post("http://"+addr+"/signup?email="+url.QueryEscape(email), "", nil)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// count runs a count(*) query.
func count(t *testing.T, db *pgxpool.Pool, query string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, db.QueryRow(context.Background(), query, args...).Scan(&n), query)
	return n
}

// TestSignupMailIsWorkedByTheWorkerProcess builds the binary, runs a worker
// and a web process on a schema of their own, signs up, signs up again (409),
// waits for the welcome mail, and stops both with SIGTERM.
func TestSignupMailIsWorkedByTheWorkerProcess(t *testing.T) {
	dbURL, db := testSchema(t)
	addr := freeAddr(t)
	worker := start(t, "-mode", "worker", "-db", dbURL, "-grace", "5s")
	web := start(t, "-mode", "web", "-addr", addr, "-db", dbURL, "-grace", "5s")

	email := fmt.Sprintf("ada-%x@example.com", rand.Uint64())
	var code int
	require.Eventually(t, func() bool {
		var err error
		code, _, err = post(addr, email)
		return err == nil
	}, 20*time.Second, 50*time.Millisecond, "the web process answers: %s", web.output())
	require.Equal(t, http.StatusCreated, code)

	code, body, err := post(addr, email)
	require.NoError(t, err)
	assert.Equal(t, http.StatusConflict, code, "a second signup of the same address")
	assert.Contains(t, body, "already signed up")
	assert.NotContains(t, body, "SQLSTATE", "no SQL error in the answer")

	assert.Equal(t, 1, count(t, db, "SELECT count(*) FROM durable_users WHERE email = $1", email), "the user row")
	require.Eventually(t, func() bool {
		return count(t, db, "SELECT count(*) FROM river_job WHERE kind = 'welcome_mail' AND state = 'completed' AND args->>'email' = $1", email) == 1
	}, 30*time.Second, 50*time.Millisecond, "the worker process completes the welcome mail: %s", worker.output())
	assert.Equal(t, 1, count(t, db, "SELECT count(*) FROM durable_mails WHERE email = $1", email), "the mail, recorded once")

	assert.NoError(t, web.stop(t, syscall.SIGTERM), "exit after SIGTERM")
	assert.NoError(t, worker.stop(t, syscall.SIGINT), "exit after SIGINT (Ctrl-C)")
}

// TestKill9UnderABacklogSendsEveryMailOnce signs up n users, starts the
// worker, SIGKILLs it with mails running, restarts it, and checks that every
// welcome job completes, once, and that no mail is recorded twice.
func TestKill9UnderABacklogSendsEveryMailOnce(t *testing.T) {
	const n = 600
	dbURL, db := testSchema(t)
	addr := freeAddr(t)
	web := start(t, "-mode", "web", "-addr", addr, "-db", dbURL, "-grace", "5s")
	require.Eventually(t, func() bool {
		resp, err := httpClient.Get("http://" + addr + "/stats")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	}, 20*time.Second, 50*time.Millisecond, "the web process answers: %s", web.output())

	// The backlog: n signups, eight at a time.
	emails := make(chan string, n)
	for i := range n {
		emails <- fmt.Sprintf("user-%d@example.com", i)
	}
	close(emails)
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			for e := range emails {
				code, body, err := post(addr, e)
				if err == nil && code != http.StatusCreated {
					err = fmt.Errorf("signup %s: %d %s", e, code, body)
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		require.NoError(t, <-errs)
	}
	require.Equal(t, n, count(t, db, "SELECT count(*) FROM river_job WHERE kind = 'welcome_mail'"))

	args := []string{"-mode", "worker", "-db", dbURL, "-grace", "5s", "-rescue-after", "3s", "-mail-delay", "100ms"}
	first := start(t, args...)
	require.Eventually(t, func() bool {
		done := count(t, db, "SELECT count(*) FROM river_job WHERE kind = 'welcome_mail' AND state = 'completed'")
		running := count(t, db, "SELECT count(*) FROM river_job WHERE kind = 'welcome_mail' AND state = 'running'")
		return done >= n/5 && running >= 1
	}, 60*time.Second, 5*time.Millisecond, "the first worker completes some mails and is sending others: %s", first.output())
	_ = first.stop(t, syscall.SIGKILL)
	done := count(t, db, "SELECT count(*) FROM river_job WHERE kind = 'welcome_mail' AND state = 'completed'")
	running := count(t, db, "SELECT count(*) FROM river_job WHERE kind = 'welcome_mail' AND state = 'running'")
	t.Logf("killed with %d of %d mails completed and %d running", done, n, running)
	require.Less(t, done, n, "the kill came before the end")
	require.Positive(t, running, "mails were running when the worker was killed")

	startAt := time.Now()
	second := start(t, args...)
	require.Eventually(t, func() bool {
		return count(t, db, "SELECT count(*) FROM river_job WHERE kind = 'welcome_mail' AND state = 'completed'") == n
	}, 90*time.Second, 50*time.Millisecond, "the restarted worker completes every mail: %s", second.output())
	t.Logf("the restarted worker completed the backlog in %v", time.Since(startAt).Round(time.Millisecond))

	assert.Equal(t, n, count(t, db, "SELECT count(*) FROM river_job WHERE kind = 'welcome_mail'"), "one job per signup")
	assert.Equal(t, n, count(t, db, "SELECT count(*) FROM durable_mails"), "one mail per signup")
	assert.Equal(t, n, count(t, db, "SELECT count(DISTINCT email) FROM durable_mails"), "no mail recorded twice")
	assert.Equal(t, n, count(t, db, "SELECT count(*) FROM durable_mails m JOIN river_job j ON j.id = m.job_id AND j.state = 'completed'"), "each mail's job completed")
	// A job running at the kill ran again (a second attempt) unless its
	// commit was already on its way to PostgreSQL; none ran a third.
	again := count(t, db, "SELECT count(*) FROM river_job WHERE kind = 'welcome_mail' AND attempt = 2")
	t.Logf("%d mails ran a second attempt", again)
	assert.LessOrEqual(t, again, running, "only the jobs running at the kill ran again")
	assert.Zero(t, count(t, db, "SELECT count(*) FROM river_job WHERE kind = 'welcome_mail' AND attempt > 2"), "none ran a third time")
	assert.NoError(t, second.stop(t, syscall.SIGTERM))
	assert.NoError(t, web.stop(t, syscall.SIGTERM))
}

// TestARefusedAuditGoesToRiver signs up through the web handler on a real
// server whose pool is already closed: the audit Job is refused with
// ErrClosed, and the line goes to River instead of being lost.
func TestARefusedAuditGoesToRiver(t *testing.T) {
	ctx := context.Background()
	_, db := testSchema(t)
	require.NoError(t, migrate(ctx, db))
	client, err := river.NewClient(riverpgxv5.New(db), &river.Config{})
	require.NoError(t, err)
	p, err := bgpool.New(1)
	require.NoError(t, err)
	require.NoError(t, p.Shutdown(ctx)) // closed: audit.Go returns ErrClosed
	srv := httptest.NewServer(handler(db, client, p))
	defer srv.Close()

	code, body, err := post(strings.TrimPrefix(srv.URL, "http://"), "grace@example.com")
	require.NoError(t, err)
	require.Equal(t, http.StatusCreated, code, body)
	assert.Equal(t, 1, count(t, db, "SELECT count(*) FROM river_job WHERE kind = 'audit' AND args->>'email' = 'grace@example.com'"),
		"the refused audit line is in River")
	assert.Equal(t, uint64(1), p.Stats().Rejected, "the pool refused it")
}
