#include "common.h"
int main(void){test_init("x");return 0;}
