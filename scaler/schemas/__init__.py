"""JSON Schemas of the events Spillway consumes (shipped as package data)."""
