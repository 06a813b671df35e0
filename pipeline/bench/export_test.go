package bench

// ProcessCPU lets the tests know whether CPU time is measured here.
var ProcessCPU = processCPU
