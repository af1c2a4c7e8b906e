package bgredis_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgpool/bgpool"
	bgredis "github.com/bgpool/bgpool/contrib/redis"
)

// The environment of a child process of TestTwoProcessesShareOneLimit.
const (
	childKeyEnv   = "BGREDIS_TEST_CHILD_KEY"   // the shared rate-limit key
	childStartEnv = "BGREDIS_TEST_CHILD_START" // when to start submitting, in Unix nanoseconds
)

// The shared limit and how long the children submit under it.
var (
	sharedLimit = redis_rate.PerSecond(50)
	runFor      = 3 * time.Second
)

var childStarts = regexp.MustCompile(`(?m)^bgredis-child starts=(\d+)$`)

// TestTwoProcessesShareOneLimit runs this test binary again as two child
// processes, each with a pool limited by a Limiter on the same key, each
// submitting as fast as it can for 3s from the same instant. Together they
// start no more tasks than the limit allows (its burst, plus 50/s for 3s,
// plus one for the token due at the last instant), at least 80% of that,
// and each gets a fair share.
func TestTwoProcessesShareOneLimit(t *testing.T) {
	if key := os.Getenv(childKeyEnv); key != "" {
		runChild(t, key)
		return
	}
	sharedRedis(t)
	key := uniqueKey(t)
	start := time.Now().Add(time.Second) // both children have started and dialled Redis by then

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	children := make([]*exec.Cmd, 2)
	outs := make([]*bytes.Buffer, 2)
	for i := range children {
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestTwoProcessesShareOneLimit$", "-test.count=1")
		cmd.Env = append(os.Environ(),
			childKeyEnv+"="+key,
			childStartEnv+"="+strconv.FormatInt(start.UnixNano(), 10),
		)
		outs[i] = new(bytes.Buffer)
		cmd.Stdout, cmd.Stderr = outs[i], outs[i]
		require.NoError(t, cmd.Start())
		children[i] = cmd
	}

	starts := make([]int, 2)
	for i, cmd := range children {
		require.NoError(t, cmd.Wait(), "child %d failed:\n%s", i, outs[i])
		m := childStarts.FindStringSubmatch(outs[i].String())
		require.NotNil(t, m, "child %d printed no count of starts:\n%s", i, outs[i])
		n, err := strconv.Atoi(m[1])
		require.NoError(t, err)
		starts[i] = n
	}

	total := starts[0] + starts[1]
	ceiling := sharedLimit.Burst + int(float64(sharedLimit.Rate)*runFor.Seconds()) + 1
	t.Logf("starts in %v under one limit of %v: %d + %d = %d (ceiling %d)", runFor, sharedLimit, starts[0], starts[1], total, ceiling)
	assert.LessOrEqual(t, total, ceiling, "got, want at most: two processes together exceeded the shared limit")
	assert.GreaterOrEqual(t, float64(total), 0.8*float64(ceiling), "got, want at least 80%% of the ceiling %d", ceiling)
	for i, n := range starts {
		assert.GreaterOrEqual(t, float64(n), 0.25*float64(total), "child %d got %d of %d starts: not a fair share", i, n, total)
	}
}

// runChild is one child of TestTwoProcessesShareOneLimit: it waits for the
// common start, submits to its pool as fast as the pool takes tasks for
// runFor, and prints how many tasks started within that time.
func runChild(t *testing.T, key string) {
	startNanos, err := strconv.ParseInt(os.Getenv(childStartEnv), 10, 64)
	require.NoError(t, err, childStartEnv)
	start := time.Unix(0, startNanos)
	end := start.Add(runFor)

	lim := bgredis.NewLimiter(sharedRedis(t), key, sharedLimit, quiet)
	p, err := bgpool.New(4, bgpool.WithLimiter(lim), bgpool.WithQueueSize(16))
	require.NoError(t, err)

	var starts atomic.Int64
	task := func(context.Context) error {
		if time.Now().Before(end) {
			starts.Add(1)
		}
		return nil
	}
	time.Sleep(time.Until(start))
	ctx, cancel := context.WithDeadline(context.Background(), end)
	defer cancel()
	for ctx.Err() == nil {
		err := p.Submit(ctx, task) // Block: waits while the queue is full, until end
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			require.NoError(t, err)
		}
	}

	shutdownCtx, cancelShutdown := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancelShutdown()
	_ = p.Shutdown(shutdownCtx) // the tasks still queued wait for tokens past end: abandon them
	os.Stdout.WriteString("bgredis-child starts=" + strconv.FormatInt(starts.Load(), 10) + "\n")
	assert.Zero(t, lim.Stats().RedisErrors, "Redis errors in the child")
}
