package bgriver_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/stretchr/testify/require"
)

// databaseURL is the PostgreSQL these tests use: the local server, trust
// auth, database test, unless BGRIVER_DATABASE_URL says otherwise.
func databaseURL() string {
	if u := os.Getenv("BGRIVER_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

// connect opens a pool on the test database, or fails with a message that
// says what to start.
func connect(ctx context.Context) (*pgxpool.Pool, error) {
	db, err := pgxpool.New(ctx, databaseURL())
	if err != nil {
		return nil, err
	}
	pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := db.Ping(pingCtx); err != nil {
		db.Close()
		return nil, fmt.Errorf("PostgreSQL is not answering at %s (start it: pg_ctlcluster 15 main start, or apt-get install -y postgresql): %w", databaseURL(), err)
	}
	return db, nil
}

// testSchema makes a schema of its own for t, with River's tables migrated
// into it, and drops it when t ends. It returns the database pool and the
// schema's name.
func testSchema(t *testing.T) (*pgxpool.Pool, string) {
	t.Helper()
	ctx := context.Background()
	db, err := connect(ctx)
	require.NoError(t, err, "the contrib/river tests need PostgreSQL; they never skip")
	schema := fmt.Sprintf("bgriver_test_%x", rand.Uint64())
	_, err = db.Exec(ctx, "CREATE SCHEMA "+schema)
	require.NoError(t, err)
	t.Cleanup(func() {
		_, _ = db.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
		db.Close()
	})
	migrator, err := rivermigrate.New(riverpgxv5.New(db), &rivermigrate.Config{Schema: schema})
	require.NoError(t, err)
	_, err = migrator.Migrate(ctx, rivermigrate.DirectionUp, nil)
	require.NoError(t, err, "River's migrations")
	return db, schema
}

// insertOnlyClient returns a River client that inserts into schema and
// works nothing.
func insertOnlyClient(t testing.TB, db *pgxpool.Pool, schema string) *river.Client[pgx.Tx] {
	t.Helper()
	c, err := river.NewClient(riverpgxv5.New(db), &river.Config{Schema: schema})
	require.NoError(t, err)
	return c
}

// countJobs counts schema's River jobs of kind in state, or in any state
// for an empty state.
func countJobs(ctx context.Context, db *pgxpool.Pool, schema, kind, state string) (int, error) {
	var n int
	q := "SELECT count(*) FROM " + schema + ".river_job WHERE kind = $1 AND ($2 = '' OR state::text = $2)"
	err := db.QueryRow(ctx, q, kind, state).Scan(&n)
	return n, err
}
