from artforge.cli import main

raise SystemExit(main())
