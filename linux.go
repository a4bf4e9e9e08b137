package main

// Linux only, as every package it builds.
import _ "github.com/wgkeeper/wgkeeper/internal/linuxonly"
