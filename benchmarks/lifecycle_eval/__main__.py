from benchmarks.lifecycle_eval.run import main

raise SystemExit(main())
