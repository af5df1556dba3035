from torch_layerlr.cli import main

main()
