package bgpool_test

import (
	"context"
	"encoding/json"
	"expvar"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgpool/bgpool"
)

func TestExpvarPublishesStatsUnderTheChosenName(t *testing.T) {
	p := newPool(t, 2)
	require.NoError(t, p.Submit(context.Background(), noop))
	shutdown(t, p)

	assert.Nil(t, expvar.Get("testpool"), "nothing is published before Publish")
	expvar.Publish("testpool", bgpool.Expvar(p))
	srv := httptest.NewServer(expvar.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var vars struct {
		Testpool bgpool.Stats `json:"testpool"`
	}
	require.NoError(t, json.Unmarshal(body, &vars))
	assert.Equal(t, uint64(1), vars.Testpool.Completed)
	assert.Equal(t, 2, vars.Testpool.Workers)
}
