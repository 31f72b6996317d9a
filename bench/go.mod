module pesto/bench

go 1.26
