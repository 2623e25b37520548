#!/bin/sh
# build tests/hunt/hunt against the worktree's build/ (run from the worktree root)
set -e
cc -std=gnu11 -O1 -g -Wall -Wextra -Iinclude -Ibuild/include tests/hunt/hunt.c -o tests/hunt/hunt \
   -Lbuild -Wl,-rpath,$PWD/build -luhmm_simdev -luhmm -lpthread
cc -std=gnu11 -O1 -g -Wall -Wextra -Iinclude -Ibuild/include tests/hunt/hunt2.c -o tests/hunt/hunt2 \
   -Lbuild -Wl,-rpath,$PWD/build -luhmm_simdev -luhmm -lpthread
cc -std=gnu11 -O1 -g -Wall -Wextra -rdynamic -Iinclude -Ibuild/include tests/hunt/hunt3.c -o tests/hunt/hunt3 \
   -Lbuild -Wl,-rpath,$PWD/build -luhmm_simdev -luhmm -lpthread
cc -std=gnu11 -O1 -g -Wall -Wextra -rdynamic -Iinclude -Ibuild/include tests/hunt/hunt4.c -o tests/hunt/hunt4 \
   -Lbuild -Wl,-rpath,$PWD/build -luhmm_simdev -luhmm -lpthread
cc -std=gnu11 -O1 -g -Wall -Wextra -rdynamic -Iinclude -Ibuild/include tests/hunt/hunt5.c -o tests/hunt/hunt5 \
   -Lbuild -Wl,-rpath,$PWD/build -luhmm_policy -luhmm_simdev -luhmm -lpthread
cc -std=gnu11 -O1 -g -Wall -Wextra -rdynamic -Iinclude -Ibuild/include tests/hunt/hunt6.c testdev/tdev.c -o tests/hunt/hunt6 \
   -Lbuild -Wl,-rpath,$PWD/build -luhmm_simdev -luhmm -lpthread
cc -std=gnu11 -O1 -g -Wall -Wextra -rdynamic -Iinclude -Ibuild/include tests/hunt/hunt7.c testdev/tdev.c -o tests/hunt/hunt7 \
   -Lbuild -Wl,-rpath,$PWD/build -luhmm_simdev -luhmm -lpthread
