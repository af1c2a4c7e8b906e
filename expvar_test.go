package bgpool_test

import (
	"context"
	"encoding/json"
	"expvar"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgpool/bgpool"
)

func TestExpvarPublishesStatsUnderTheChosenName(t *testing.T) {
	p := newPool(t, 2)
	require.NoError(t, p.Submit(context.Background(), noop))
	shutdown(t, p)

	// expvar names are process-wide and cannot be unpublished: one per run
	// of the test (go test -count=N).
	name := fmt.Sprintf("testpool%d", expvarRuns.Add(1))
	assert.Nil(t, expvar.Get(name), "nothing is published before Publish")
	expvar.Publish(name, bgpool.Expvar(p))
	srv := httptest.NewServer(expvar.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var vars map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(body, &vars))
	var got bgpool.Stats
	require.NoError(t, json.Unmarshal(vars[name], &got))
	assert.Equal(t, uint64(1), got.Completed)
	assert.Equal(t, 2, got.Workers)
}

var expvarRuns atomic.Int64

// Expvar(nil) panics at once, in the call rather than when the variable is
// read, with a message that starts with "bgpool:" and names Expvar.
func TestExpvarPanicsAtOnceOnANilPoolWithABgpoolMessage(t *testing.T) {
	var recovered any
	func() {
		defer func() { recovered = recover() }()
		_ = bgpool.Expvar(nil)
	}()
	require.NotNil(t, recovered, "Expvar(nil) did not panic")
	assert.True(t, strings.HasPrefix(fmt.Sprint(recovered), "bgpool:"),
		"got panic %q, want one starting with %q", fmt.Sprint(recovered), "bgpool:")
	assert.Equal(t, "bgpool: Expvar: nil pool", recovered)
}
