//go:build race

package main

func raceNote() string { return "go test -race" }
