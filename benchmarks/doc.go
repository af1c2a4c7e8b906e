// Package benchmarks compares bgpool with other ways of running background
// tasks in Go. It is its own module, so that the root module keeps only its
// own dependencies; the contenders live in pool_bench_test.go and the HTTP
// load benchmark in the load command. See README.md for how to run them and
// for the numbers.
package benchmarks
