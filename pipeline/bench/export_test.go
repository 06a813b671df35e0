package bench

// ProcessCPU lets the tests know whether CPU time is measured here.
var ProcessCPU = processCPU

// ParseCPUSplit lets the tests feed the profile parser hostile input.
var ParseCPUSplit = parseCPUSplit
