package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
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

func TestChiRouterRendersThumbnailsInTheBackground(t *testing.T) {
	pool, err := bgpool.New(2)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pool.Shutdown(context.Background()) })
	done := make(chan string, 1)
	rendered = func(id string) { done <- id }
	t.Cleanup(func() { rendered = nil })
	srv := httptest.NewServer(router(pool))
	t.Cleanup(srv.Close)

	resp, err := http.Post(srv.URL+"/thumbnails/42", "", nil)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusAccepted, resp.StatusCode)
	assert.Equal(t, "rendering thumbnail 42\n", string(body))
	select {
	case id := <-done:
		assert.Equal(t, "42", id, "the task rendered the thumbnail")
	case <-time.After(10 * time.Second):
		t.Fatal("the thumbnail was not rendered")
	}

	resp, err = http.Get(srv.URL + "/debug/bgpool")
	require.NoError(t, err)
	var s bgpool.Stats
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&s))
	resp.Body.Close()
	assert.Equal(t, uint64(1), s.Submitted)
}
