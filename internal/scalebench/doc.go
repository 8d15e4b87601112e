// Package scalebench measures how underlay's cost grows with nodes and
// tasks (issue 14's scale figures). Its benchmarks, run by `make
// bench-scale` and `make bench-ipam-sim`, stand on namespace labs and on
// a Consul dev agent; this package holds what they share and what can be
// unit-tested apart from them: reading a process's CPU time and memory
// from /proc, percentiles, and the aligned table they print.
//
//   - BenchmarkIntegrationScale (scale_bench_test.go): labs of
//     BENCH_SCALE_NODES nodes, bursts of BENCH_SCALE_TASKS tasks on a
//     cluster-IPAM network, timed until running, registered and passing in
//     Consul, with the agents' CPU and memory and Consul's raft writes.
//   - BenchmarkIntegrationIPAMSim (sim_bench_test.go): the in-process
//     allocators of BENCH_IPAM_SIM_NODES simulated nodes against one real
//     Consul server, in bursts, counting lost check-and-sets, writes and
//     allocation latency, to find where the design stops scaling.
package scalebench
