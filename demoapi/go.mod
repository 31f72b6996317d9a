module pesto/demoapi

go 1.26
