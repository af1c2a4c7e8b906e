package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

const testDB = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// TestSignupMailIsWorkedByTheWorkerProcess builds the binary, runs a worker
// and a web process against the local PostgreSQL, signs up, waits for the
// welcome mail to be completed by River, and stops both with SIGTERM.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreCurrent())
}

func TestSignupMailIsWorkedByTheWorkerProcess(t *testing.T) {
	ctx := context.Background()
	db, err := pgxpool.New(ctx, testDB)
	require.NoError(t, err)
	defer db.Close()
	require.NoError(t, db.Ping(ctx), "this test needs PostgreSQL at 127.0.0.1:5432 (database test); it never skips")

	bin := filepath.Join(t.TempDir(), "durable")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stderr = os.Stderr
	require.NoError(t, build.Run())

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())

	start := func(args ...string) (*exec.Cmd, *strings.Builder) {
		cmd := exec.Command(bin, args...)
		var out strings.Builder
		pr, pw := io.Pipe()
		cmd.Stdout, cmd.Stderr = pw, pw
		require.NoError(t, cmd.Start())
		go func() {
			s := bufio.NewScanner(pr)
			for s.Scan() {
				out.WriteString(s.Text() + "\n")
			}
		}()
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = pw.Close() })
		return cmd, &out
	}
	worker, _ := start("-mode", "worker", "-db", testDB, "-grace", "5s")
	web, webOut := start("-mode", "web", "-addr", addr, "-db", testDB, "-grace", "5s")

	email := fmt.Sprintf("ada-%x@example.com", rand.Uint64())
	var resp *http.Response
	require.Eventually(t, func() bool {
		resp, err = http.Post("http://"+addr+"/signup?email="+email, "", nil)
		return err == nil
	}, 20*time.Second, 50*time.Millisecond, "the web process answers: %s", webOut)
	resp.Body.Close()
	require.Equal(t, http.StatusCreated, resp.StatusCode)

	var users int
	require.NoError(t, db.QueryRow(ctx, "SELECT count(*) FROM durable_users WHERE email = $1", email).Scan(&users))
	assert.Equal(t, 1, users, "the user row")
	require.Eventually(t, func() bool {
		var n int
		err := db.QueryRow(ctx, "SELECT count(*) FROM river_job WHERE kind = 'welcome_mail' AND state = 'completed' AND args->>'email' = $1", email).Scan(&n)
		return err == nil && n == 1
	}, 30*time.Second, 50*time.Millisecond, "the worker process completes the welcome mail")

	for _, cmd := range []*exec.Cmd{web, worker} {
		require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			assert.NoError(t, err, "exit after SIGTERM")
		case <-time.After(10 * time.Second):
			t.Fatal("no exit within 10s of SIGTERM")
		}
	}
}
