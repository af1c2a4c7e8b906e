package bgpool

import (
	"errors"
	"fmt"
)

var (
	// ErrClosed is returned by Submit and TrySubmit once Shutdown has begun,
	// and by a Block wait that Shutdown interrupted. The task was not run and
	// is counted Rejected.
	ErrClosed = errors.New("bgpool: pool is closed")

	// ErrOverloaded is returned when a task could not be admitted: by the
	// Reject policy, by TrySubmit when there is no room, and by a Block or
	// BlockFor wait that ended before room appeared (then the error also
	// matches the context's error with errors.Is). The task was not run and is
	// counted Rejected.
	ErrOverloaded = errors.New("bgpool: pool is overloaded")

	// ErrDropped is the error that Do, Group.Wait and Future.Wait report for
	// a task that the pool discarded without running it: by Drop or
	// DropOldest, or because it waited longer than WithMaxQueueWait. Such a
	// task is counted Dropped. (A task that Shutdown abandoned reports an
	// error matching the cause of Shutdown's deadline instead, such as
	// context.DeadlineExceeded.)
	ErrDropped = errors.New("bgpool: task dropped without running")

	// ErrNoPool is returned by Go for a request that did not pass through
	// Middleware, so that no pool is attached to its context. Nothing was
	// submitted and nothing is counted.
	ErrNoPool = errors.New("bgpool: no pool in the request context (is the handler wrapped in bgpool.Middleware?)")
)

// PanicError is the error a task's panic becomes. The pool recovers every
// panic in a task, counts it Panicked and passes a *PanicError to the error
// handler; the worker goes on with the next task.
type PanicError struct {
	// Value is the value the task passed to panic.
	Value any
	// Stack is the stack trace of the panicking goroutine, as
	// runtime/debug.Stack formats it.
	Stack []byte
}

var _ error = (*PanicError)(nil)

// Error reports the panic value. The stack is not included; read Stack.
func (e *PanicError) Error() string {
	return fmt.Sprintf("bgpool: task panicked: %v", e.Value)
}

// Unwrap returns Value when it is an error, so that errors.Is and errors.As
// see through the panic, and nil otherwise.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// overloaded is the error of a wait for room that ctx ended: it matches both
// ErrOverloaded and cause, the context's error.
func overloaded(cause error) error {
	return fmt.Errorf("%w: %w", ErrOverloaded, cause)
}
