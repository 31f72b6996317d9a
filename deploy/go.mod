module pesto/deploy

go 1.26
